#!/usr/bin/env bash
# perl under libmmtier: a large hash built, sorted and dropped, and regex
# matching/substitution over a multi-megabyte string; output compared with
# the run without mmtier.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh" "$@"

PERL=$(require_prog perl perl)

cat > "$WORK/workload.pl" <<'PL'
use strict;
use warnings;
use Digest::MD5 qw(md5_hex);

my %h;
for my $i (1 .. 400000) {
  $h{"key$i"} = join(",", $i, ($i * $i) % 1000003, "v" x ($i % 7));
}
my ($long, $sum) = (0, 0);
for my $k (sort keys %h) {
  if ($h{$k} =~ /^(\d+),(\d+),(v*)$/) {
    $sum += $2;
    $long++ if length($3) > 3;
  }
}
print "hash ", scalar(keys %h), " sum $sum long $long\n";
my ($maxk) = sort { $h{$b} cmp $h{$a} or $a cmp $b } grep { /7$/ } keys %h;
print "max $maxk $h{$maxk}\n";
undef %h;

my $text = join("\n", map { "line $_: the quick brown fox " . (($_ * 13) % 101) . " jumps" } 1 .. 150000);
(my $marked = $text) =~ s/(\d+)/<$1>/g;
my %freq;
$freq{$_}++ for ($text =~ /\b([a-z]+)\b/g);
my $foxes = () = $text =~ /fox \d*7 jumps/g;
print "text ", length($text), " marked ", length($marked), " ", md5_hex($marked), "\n";
print "freq ", join(" ", map { "$_=$freq{$_}" } sort keys %freq), "\n";
print "foxes $foxes\n";
my @split = split /\n/, $marked;
my @sorted = sort @split;
print "lines ", scalar(@split), " shortest '$sorted[0]' longest '$sorted[-1]'\n";
PL

workload() {
  run "$PERL" "$WORK/workload.pl"
}

run_modes workload
