#!/usr/bin/env bash
# Asserts the CLI contract of every subcommand: --help exits 0 and prints
# usage; an unknown option or argument exits 2 with one line on stderr.
set -u
pk=$1
pass=0 fail=0
t() { # t NAME EXPECTED_RC CMD... ; checks exit status (and that no help line says its default twice)
    local name=$1 want=$2; shift 2
    "$@" >/tmp/pkcli.out 2>/tmp/pkcli.err; local rc=$?
    if [ "$rc" -eq "$want" ]; then pass=$((pass + 1)); else
        fail=$((fail + 1)); echo "FAIL $name: exit $rc, want $want"; cat /tmp/pkcli.err; fi
    if grep -E '\(default [^)]*\).*\(default ' /tmp/pkcli.out; then
        fail=$((fail + 1)); echo "FAIL $name: a default given twice"; fi
}
lines() { # lines NAME FILE MAX: FILE has between 1 and MAX lines
    local n; n=$(wc -l <"$2")
    if [ "$n" -ge 1 ] && [ "$n" -le "$3" ]; then pass=$((pass + 1)); else
        fail=$((fail + 1)); echo "FAIL $1: $n lines in $2"; cat "$2"; fi
}
t help 0 "$pk" --help
grep -q '^usage: proxkey' /tmp/pkcli.out && pass=$((pass + 1)) || { fail=$((fail + 1)); echo "FAIL help text"; }
t version 0 "$pk" version
grep -Eq '^proxkey [0-9]+\.[0-9]+\.[0-9]+$' /tmp/pkcli.out && pass=$((pass + 1)) || { fail=$((fail + 1)); echo "FAIL version text"; }
t no-args 2 "$pk"
t unknown-cmd 2 "$pk" frobnicate
lines unknown-cmd-msg /tmp/pkcli.err 1
t unknown-opt 2 "$pk" --frobnicate
lines unknown-opt-msg /tmp/pkcli.err 1
# Every listed subcommand answers --help with exit 0 and rejects a bogus option with 2.
for cmd in $("$pk" --help | awk '/^commands:/{on=1;next} on && NF{print $1}'); do
    [ "$cmd" = help ] && continue
    t "$cmd --help" 0 "$pk" "$cmd" --help
    [ -s /tmp/pkcli.out ] && pass=$((pass + 1)) || { fail=$((fail + 1)); echo "FAIL $cmd --help printed nothing"; }
    [ "$cmd" = version ] && continue
    t "$cmd --bogus" 2 "$pk" "$cmd" --no-such-option
    lines "$cmd --bogus msg" /tmp/pkcli.err 1
done
# Every command group fronts its commands alike (src/cli.c pk_cli_select):
# no command: usage on stderr and a last line saying so, exit 2; an unknown
# command: one line, exit 2; --help: usage on stdout, exit 0; and each command
# a group lists answers --help with exit 0.
group() { # group WORDS...: the group `proxkey WORDS`
    local prog="proxkey $*"
    t "$prog (none)" 2 "$pk" "$@"
    [ ! -s /tmp/pkcli.out ] && [ "$(tail -n 1 /tmp/pkcli.err)" = \
        "$prog: no command given (try '$prog --help')" ] && pass=$((pass + 1)) ||
        { fail=$((fail + 1)); echo "FAIL $prog with no command: $(tail -n 1 /tmp/pkcli.err)"; }
    t "$prog frobnicate" 2 "$pk" "$@" frobnicate
    lines "$prog frobnicate msg" /tmp/pkcli.err 1
    [ "$(cat /tmp/pkcli.err)" = "$prog: unknown command 'frobnicate' (try '$prog --help')" ] &&
        pass=$((pass + 1)) || { fail=$((fail + 1)); echo "FAIL $prog unknown: $(cat /tmp/pkcli.err)"; }
    t "$prog --help" 0 "$pk" "$@" --help
    grep -q "^usage: $prog" /tmp/pkcli.out && pass=$((pass + 1)) ||
        { fail=$((fail + 1)); echo "FAIL $prog --help: $(head -n 1 /tmp/pkcli.out)"; }
    for sub in $(awk '/^commands:/{on=1;next} on && NF{print $1}' /tmp/pkcli.out); do
        t "$prog $sub --help" 0 "$pk" "$@" "$sub" --help
    done
}
for g in kms node ca device "device mk" gts "gts device"; do
    # shellcheck disable=SC2086 # word splitting intended: "device mk"
    group $g
done
t demo-selftest 0 "$pk" demo selftest
t demo-unknown 2 "$pk" demo no-such-scenario
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
