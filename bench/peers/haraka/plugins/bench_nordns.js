// Cases (a)-(e): no reverse DNS of the client (Haraka asks for every
// connection), as the other servers there: the remote host is "[ip]".
// bench/peers/QpNoDNS.pm does the same for qpsmtpd.
'use strict'

exports.hook_lookup_rdns = function (next, connection) {
  next(OK, `[${connection.remote.ip}]`)
}
