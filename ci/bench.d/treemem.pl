#!/usr/bin/perl
# ci/bench.d/treemem.pl ROOT EXCLUDE_REGEX — memory of a process tree.
#
# Until process ROOT ends (or is a zombie), every 20 ms: walk its process tree
# (/proc/PID/task/*/children), leave out ROOT itself and the processes whose
# name (comm) matches EXCLUDE_REGEX, and sum over the live ones their VmHWM
# (peak RSS so far, /proc/PID/status) and their Pss (/proc/PID/smaps_rollup).
# Then print the largest sums seen, "HWM_KIB PSS_KIB".  Uses only perl-base
# and Time::HiRes.
use strict;
use warnings;
use Time::HiRes qw(sleep);

@ARGV == 2 or die "usage: treemem.pl ROOT EXCLUDE_REGEX\n";
my ($root, $exclude) = @ARGV;
$exclude = qr/$exclude/;
my ($peak_hwm, $peak_pss) = (0, 0);

sub slurp {
    my ($path) = @_;
    open(my $fh, '<', $path) or return '';
    local $/;
    my $text = <$fh>;
    return defined $text ? $text : '';
}

while (1) {
    my ($state) = slurp("/proc/$root/stat") =~ /\)\s+(\S)/;
    last if !defined $state || $state eq 'Z';
    my @stack = ($root);
    my ($hwm_sum, $pss_sum) = (0, 0);
    while (@stack) {
        my $pid = pop @stack;
        for my $children (glob "/proc/$pid/task/*/children") {
            push @stack, split ' ', slurp($children);
        }
        next if $pid == $root;
        my $status = slurp("/proc/$pid/status");
        my ($name) = $status =~ /^Name:\s+(.*)$/m;
        next if !defined $name || $name =~ $exclude;
        my ($hwm) = $status =~ /^VmHWM:\s+(\d+)/m;
        my ($pss) = slurp("/proc/$pid/smaps_rollup") =~ /^Pss:\s+(\d+)/m;
        $hwm_sum += $hwm // 0;
        $pss_sum += $pss // 0;
    }
    $peak_hwm = $hwm_sum if $hwm_sum > $peak_hwm;
    $peak_pss = $pss_sum if $pss_sum > $peak_pss;
    sleep 0.02;
}
print "$peak_hwm $peak_pss\n";
