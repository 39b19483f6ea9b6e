#!/usr/bin/perl
# ci/bench.d/sink.pl PORT... — the "internet" end of ci/bench.
#
# Listens on every given TCP port on the IPv4 and the IPv6 wildcard address
# (one socket each, IPV6_V6ONLY on the IPv6 one) with the largest backlog the
# namespace allows, and accepts and closes every connection at once, in one
# process, without forking.  The kernel completes the handshakes; this loop
# only keeps the accept queues from filling up between runs.  Combined with
# `ip route add local PREFIX dev lo` in its namespace it answers on every
# address of PREFIX.  Prints "ready" once all sockets listen.  Uses only
# perl-base modules.
use strict;
use warnings;
use IO::Socket::IP;
use IO::Select;
use Socket qw(IPPROTO_IPV6 IPV6_V6ONLY);

@ARGV or die "usage: sink.pl PORT...\n";
my $select = IO::Select->new;
for my $port (@ARGV) {
    for my $host ('0.0.0.0', '::') {
        my $socket = IO::Socket::IP->new(
            LocalHost => $host,
            LocalPort => $port,
            Listen    => 65535,
            ReuseAddr => 1,
            V6Only    => 1,
            Blocking  => 0,
        ) or die "sink.pl: cannot listen on [$host]:$port: $@\n";
        $select->add($socket);
    }
}
$| = 1;
print "ready\n";
while (1) {
    for my $listener ($select->can_read) {
        while (my $conn = $listener->accept) {
            close $conn;
        }
    }
}
