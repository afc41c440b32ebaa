# Preloaded into qpsmtpd-prefork (perl -T -I bench/peers -MQpLoopDNS ...) so
# that no DNS query leaves the machine: every Net::DNS::Resolver made in the
# process (qpsmtpd's own, its dnsbl/rhsbl/helo plugins', Mail::SPF's and
# Mail::DKIM's) asks only the bench's loopback DNS server, port
# $BENCH_DNS_PORT, whatever /etc/resolv.conf says.
package QpLoopDNS;
use strict;
use Net::DNS::Resolver;
no warnings 'redefine';

my ($port) = ($ENV{BENCH_DNS_PORT} || '') =~ /^(\d{1,5})$/
    or die "QpLoopDNS: BENCH_DNS_PORT must be a port number\n";
my $base_new = Net::DNS::Resolver->can('new');
*Net::DNS::Resolver::new = sub {
    my $self = $base_new->(@_);
    $self->nameservers('127.0.0.1');
    $self->port($port);
    return $self;
};
1;
