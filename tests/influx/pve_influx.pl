#!/usr/bin/perl
# Builds InfluxDB line protocol the way Proxmox VE's metric server plugin does,
# for the tests of the push endpoints: written after pve-manager's
# PVE/Status/InfluxDB.pm (update_*_status, build_influxdb_payload,
# get_recursive_values, prepare_value) and PVE/Status/Plugin.pm (UDP batching),
# in Perl so that number formatting, key order, quoting and escaping are Perl's
# own, exactly as on a Proxmox node.
#
# stdin:  {"mtu": 1500, "transactions": [[call, ...], ...]}, where a call is
#         {"kind": "node", "node": N, "ctime": S, "data": {...}}
#         {"kind": "qemu"|"lxc", "vmid": V, "node": N, "ctime": S, "data": {...}}
#         {"kind": "storage", "node": N, "storeid": ID, "ctime": S, "data": {...}}
#         (one transaction per pvestatd update: nodes, qemu, lxc, storage).
# stdout: [{"body": "...", "datagrams": ["...", ...]}, ...], one per transaction:
#         the whole payload (what HTTP sends, batched by max-body-size) and the
#         UDP datagrams (batched by MTU - 50 bytes).
use strict;
use warnings;

use JSON::PP;
use POSIX qw(isnan isinf);
use Scalar::Util qw(looks_like_number);

my $input = JSON::PP->new->decode(do { local $/; <STDIN> });
my $batch_size = ($input->{mtu} // 1500) - 50;

my @result;
for my $calls (@{ $input->{transactions} }) {
    my $txn = { all => '', queue => '', datagrams => [] };
    update($txn, $_) for @$calls;
    flush($txn);
    push @result, { body => $txn->{all}, datagrams => $txn->{datagrams} };
}
print JSON::PP->new->canonical->encode(\@result);

# Plugin.pm add_metric_data: flush the queue before a line would fill it.
sub add_line {
    my ($txn, $line) = @_;
    $txn->{all} .= $line;
    flush($txn) if length($txn->{queue}) + length($line) >= $batch_size;
    $txn->{queue} .= $line;
}

sub flush {
    my ($txn) = @_;
    push @{ $txn->{datagrams} }, $txn->{queue} if $txn->{queue} ne '';
    $txn->{queue} = '';
}

sub update {
    my ($txn, $call) = @_;
    my $data = $call->{data};
    my $ctime = $call->{ctime} * 1000000000;
    my $kind = $call->{kind};
    if ($kind eq 'node') {
        payload($txn, $data, $ctime, "object=nodes,host=$call->{node}");
    } elsif ($kind eq 'qemu' || $kind eq 'lxc') {
        my $object = "object=$kind,vmid=$call->{vmid},nodename=$call->{node}";
        $object .= ",host=$data->{name}" if $data->{name} && $data->{name} ne '';
        $object =~ s/\s/\\ /g;
        payload($txn, $data, $ctime, $object, { vmid => 1 });
    } elsif ($kind eq 'storage') {
        my $object = "object=storages,nodename=$call->{node},host=$call->{storeid}";
        $object .= ",type=$data->{type}" if $data->{type} && $data->{type} ne '';
        $object =~ s/\s/\\ /g;
        payload($txn, $data, $ctime, $object);
    } else {
        die "unknown kind $kind\n";
    }
}

# Scalars of the top level go to `system`; a nested hash becomes its own
# measurement, a hash inside that one an `instance` tag, anything deeper is
# flattened into the instance's fields.
sub payload {
    my ($txn, $data, $ctime, $tags, $excluded, $measurement, $instance) = @_;
    my $always_quoted = { name => 1, tags => 1 };
    my @values;
    for my $key (sort keys %$data) {
        next if $excluded && $excluded->{$key};
        my $value = $data->{$key};
        next if !defined($value);
        if (!ref($value) && $value ne '') {
            my $v = field($value, $always_quoted->{$key});
            push @values, "$key=$v" if defined($v);
        } elsif (ref($value) eq 'HASH') {
            if (!defined($measurement)) {
                payload($txn, $value, $ctime, $tags, $excluded, $key);
            } elsif (!defined($instance)) {
                payload($txn, $value, $ctime, $tags, $excluded, $measurement, $key);
            } else {
                push @values, flatten($value);
            }
        }
    }
    return if !@values;
    my $tagset = $tags;
    $tagset .= ",instance=$instance" if defined($instance);
    add_line($txn, ($measurement // 'system') . ",$tagset " . join(',', @values) . " $ctime\n");
}

sub flatten {
    my ($hash) = @_;
    my @values;
    for my $key (keys %$hash) {
        my $value = $hash->{$key};
        if (ref($value) eq 'HASH') {
            push @values, flatten($value);
        } elsif (!ref($value) && $value ne '') {
            my $v = field($value);
            push @values, "$key=$v" if defined($v);
        }
    }
    return @values;
}

sub field {
    my ($value, $quote) = @_;
    if (!$quote && looks_like_number($value)) {
        return undef if isnan($value) || isinf($value);
        return $value;
    }
    $value =~ s/\"/\\\"/g;
    return "\"$value\"";
}
