// The bench's queue plugin for Haraka: stores each accepted message the way
// qsmtp's queue/maildir does. Per message: Return-Path and Delivered-To
// headers on top of the message as Haraka hands it over (its Received
// header included), LF line ends; written to tmp/<unique name>, fsync'd,
// renamed into new/, then new/ fsync'd so the rename is durable too; only
// then the 250. All file work is async (libuv's thread pool), as a Haraka
// plugin should; the maildir path comes from config/bench_maildir.ini.
'use strict'

const fsp = require('node:fs/promises')
const os = require('node:os')
const path = require('node:path')
const { Writable } = require('node:stream')

let seq = 0

// @haraka/email-address 3.x: `address` is a property (older: a method).
const addr = (a) => (typeof a.address === 'function' ? a.address() : a.address)

exports.register = function () {
  this.dir = this.config.get('bench_maildir.ini').main.path
}

async function store(dir, name, data) {
  const tmp = path.join(dir, 'tmp', name)
  const fh = await fsp.open(tmp, 'wx', 0o600)
  try {
    await fh.writeFile(data)
    await fh.sync()
  } finally {
    await fh.close()
  }
  await fsp.rename(tmp, path.join(dir, 'new', name))
  const d = await fsp.open(path.join(dir, 'new'), 'r')
  try {
    await d.sync()
  } finally {
    await d.close()
  }
}

exports.hook_queue = function (next, connection) {
  const txn = connection.transaction
  const name = `${Math.floor(Date.now() / 1000)}.P${process.pid}Q${++seq}.${os.hostname()}`
  let head = `Return-Path: <${addr(txn.mail_from)}>\n`
  for (const r of txn.rcpt_to) head += `Delivered-To: ${addr(r)}\n`
  const chunks = [Buffer.from(head)]
  const sink = new Writable({
    write(chunk, enc, cb) {
      chunks.push(chunk)
      cb()
    },
  })
  sink.on('finish', () => {
    store(this.dir, name, Buffer.concat(chunks)).then(
      () => next(OK, 'Ok: queued'),
      (err) => {
        connection.logerror(this, `store failed: ${err.message}`)
        next(DENYSOFT, 'storage failed')
      },
    )
  })
  txn.message_stream.pipe(sink, { line_endings: '\n' })
}
