#!/usr/bin/perl
# ci/bench.d/dnsdelay.pl LISTEN_IP LISTEN_PORT UPSTREAM_IP UPSTREAM_PORT DELAY_S
#
# A UDP DNS forwarder that holds every query for DELAY_S seconds before
# passing it to the upstream server (dnsmasq), and relays each answer back at
# once: it gives the lab's resolver a round-trip time of DELAY_S, which the
# kernel here cannot (no netem qdisc).  Queries are independent: any number
# can be in flight, so a client that asks concurrently pays one delay per
# round, and one that asks one after the other pays one per query.
#
# One upstream socket; each forwarded query gets an ID of its own (the
# client's is put back in the answer).  Both sockets get large receive
# buffers so that a burst of hundreds of queries is not dropped here, and at
# most MAX_UPSTREAM queries are outstanding at dnsmasq (which answers from
# memory in microseconds, so this adds no measurable delay).
# Prints "ready" once it listens.  Set DNSDELAY_LOG=1 to log every query and
# answer (time, direction) on stderr.
use strict;
use warnings;
use IO::Socket::IP;
use IO::Select;
use Socket qw(SOL_SOCKET);
use Errno qw(EAGAIN EWOULDBLOCK);
use Time::HiRes qw(time);

@ARGV == 5 or die "usage: dnsdelay.pl LISTEN_IP LISTEN_PORT UPSTREAM_IP UPSTREAM_PORT DELAY_S\n";
my ($listen_ip, $listen_port, $up_ip, $up_port, $delay) = @ARGV;
my $log = $ENV{DNSDELAY_LOG};
use constant SO_RCVBUFFORCE => 33;    # Linux; root only
use constant SO_SNDBUFFORCE => 32;
# Queries in flight to the upstream at once: dnsmasq's receive buffer (whose
# size a network namespace cannot raise) drops part of a burst of hundreds.
use constant MAX_UPSTREAM => 64;

my $server = IO::Socket::IP->new(
    LocalHost => $listen_ip,
    LocalPort => $listen_port,
    Proto     => 'udp',
    Blocking  => 0,
) or die "dnsdelay.pl: cannot listen on $listen_ip:$listen_port: $@\n";
my $upstream = IO::Socket::IP->new(
    PeerHost => $up_ip,
    PeerPort => $up_port,
    Proto    => 'udp',
    Blocking => 0,
) or die "dnsdelay.pl: cannot reach $up_ip:$up_port: $@\n";
for my $socket ($server, $upstream) {
    setsockopt($socket, SOL_SOCKET, SO_RCVBUFFORCE, 16 << 20);
    setsockopt($socket, SOL_SOCKET, SO_SNDBUFFORCE, 16 << 20);
}
my $select = IO::Select->new($server, $upstream);
my @queue;        # [due, query, client address], in arrival order = due order
my %pending;      # our ID => [client ID, client address, sent at]
my $next_id = int(rand(65536));
$| = 1;
print "ready\n";
while (1) {
    my $now = time;
    while (@queue && $queue[0][0] <= $now && keys(%pending) < MAX_UPSTREAM) {
        my (undef, $query, $client) = @{ shift @queue };
        next if length $query < 12;
        my $id;
        do { $next_id = ($next_id + 1) & 0xffff; $id = $next_id } while exists $pending{$id};
        $pending{$id} = [substr($query, 0, 2), $client, $now];
        substr($query, 0, 2) = pack('n', $id);
        $upstream->send($query);
        printf STDERR "%.4f fwd\n", $now if $log;
    }
    # Forget queries whose answer never came.
    for my $id (keys %pending) {
        delete $pending{$id} if $now - $pending{$id}[2] > 10;
    }
    my $wait = @queue ? $queue[0][0] - time : 1;
    $wait = 1 if @queue && keys(%pending) >= MAX_UPSTREAM;
    $wait = 0 if $wait < 0;
    for my $socket ($select->can_read($wait)) {
        my $buffer;
        if ($socket == $server) {
            while (defined(my $client = $server->recv($buffer, 65535))) {
                push @queue, [time + $delay, $buffer, $client];
                printf STDERR "%.4f query\n", time if $log;
            }
        } else {
            while (defined $upstream->recv($buffer, 65535)) {
                next if length $buffer < 12;
                my $entry = delete $pending{ unpack('n', $buffer) } or next;
                substr($buffer, 0, 2) = $entry->[0];
                $server->send($buffer, 0, $entry->[1]);
                printf STDERR "%.4f answer\n", time if $log;
            }
        }
    }
}
