# Preloaded into qpsmtpd-prefork (perl -T -I bench/peers -MQpNoDNS ...) for the
# benchmark: the daemon resolves every client's PTR record through Net::DNS
# (ignoring /etc/hosts), which would send DNS traffic off the machine. This
# makes Qpsmtpd::TcpServer::tcpenv return "[ip]" as the remote host name, as
# qpsmtpd itself does when rDNS is switched off.
package QpNoDNS;
use strict;
use Qpsmtpd::TcpServer;
no warnings 'redefine';
*Qpsmtpd::TcpServer::tcpenv = sub {
    my ($laddr, $iaddr) = @_;
    return ($laddr, $iaddr, $iaddr ? "[$iaddr]" : "[noip!]");
};
1;
