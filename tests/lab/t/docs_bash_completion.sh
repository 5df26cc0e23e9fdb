#!/bin/bash
# SPDX-License-Identifier: MPL-2.0
# Docs that stay true, driven for real: bash completion (completions/zmigrate.bash) through
# COMP_WORDS/COMP_CWORD for subcommands, options and option values, instance UUIDs from
# `zmigrate list` (the real binary on an empty state store, and a stand-in with rows), and every
# long option of every subcommand's --help; then the man page renders without a warning
# (groff -ww -z, man -l). Needs no root and no lab.
# Exit: 0 pass, 1 fail, 125 skip (no zmigrate binary or no groff).

set -euo pipefail

src=${ZMIGRATE_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)}
bin=${ZMIGRATE_BIN:-$src/build/zmigrate}
[ -x "$bin" ] || { echo "SKIP: no zmigrate binary at $bin (set ZMIGRATE_BIN)"; exit 125; }
command -v groff >/dev/null || { echo "SKIP: groff is missing (apt-get install groff-base)"; exit 125; }

tmp=$(mktemp -d /var/tmp/zmigrate-docs.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
unset ZMIGRATE_CONFIG VMAPI_URL CNAPI_URL NAPI_URL IMGAPI_URL
export ZMIGRATE_STATE_DIR=$tmp/state ZMIGRATE_LOG_DIR=$tmp/log

failures=0
fail() {
    echo "FAIL: $*"
    failures=$((failures + 1))
}

# shellcheck disable=SC1091 # completions/zmigrate.bash
. "$src/completions/zmigrate.bash"

# complete_words "WORDS": the candidates bash offers for the last word of WORDS (one a line); a
# trailing space means a new, empty word is being completed.
complete_words() {
    local line=$1
    read -ra COMP_WORDS <<<"$line"
    if [[ $line == *" " ]]; then
        COMP_WORDS+=("")
    fi
    COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
    COMP_LINE=$line
    COMP_POINT=${#line}
    COMPREPLY=()
    _zmigrate
    printf '%s\n' "${COMPREPLY[@]}"
}

# expect_words "WORDS" WANTED...: each WANTED must be offered.
expect_words() {
    local words=$1 w got
    shift
    got=$(complete_words "$words")
    for w in "$@"; do
        grep -qxF -- "$w" <<<"$got" || fail "completing '$words' does not offer '$w' (got: $(tr '\n' ' ' <<<"$got"))"
    done
}

# expect_only "WORDS" WANTED...: exactly these are offered (in any order).
expect_only() {
    local words=$1 got want
    shift
    got=$(complete_words "$words" | sed '/^$/d' | sort | tr '\n' ' ')
    want=$( (($# == 0)) || printf '%s\n' "$@" | sort | tr '\n' ' ')
    [ "$got" = "$want" ] || fail "completing '$words' offers '$got', expected '$want'"
}

# 1. Registration.
complete -p zmigrate | grep -q -- '-F _zmigrate' || fail "complete -p zmigrate: not registered"

# 2. Subcommands: every one listed by --help completes from its first two letters.
cmds=$("$bin" --help | awk '/^Subcommands:/ { on = 1; next } on && !NF { exit } on { print $1 }')
[ -n "$cmds" ] || fail "no subcommands found in zmigrate --help"
for c in $cmds; do
    expect_words "zmigrate ${c:0:2}" "$c"
done
expect_only "zmigrate sw" switch
expect_words "zmigrate --st" --state-dir

# 3. Every long option of every subcommand's --help is offered after the subcommand.
for c in $cmds; do
    for opt in $("$bin" "$c" --help | grep -oE -- '--[a-z][a-z0-9-]+' | sort -u); do
        expect_words "zmigrate $c --" "$opt"
    done
done

# 4. Option values.
expect_only "zmigrate list -s p" paused
expect_only "zmigrate list --state " running paused failed successful
expect_only "zmigrate migrate -n " # a compute node: nothing to guess
mkdir -p "$tmp/dirs/alpha"
expect_only "zmigrate --state-dir $tmp/dirs/al" "$tmp/dirs/alpha"

# 5. Instance UUIDs from the real binary: an empty store offers nothing and needs no API.
out=$("$bin" list) || fail "zmigrate list on an empty store failed"
[ "$out" = "UUID  PHASE  STATE  AGE  RUNTIME" ] || fail "zmigrate list on an empty store printed '$out'"
[ "$("$bin" list --json | tr -d ' \n')" = "[]" ] || fail "zmigrate list --json is not []"
expect_only "$bin watch "

# 6. Instance UUIDs with rows: a stand-in zmigrate on PATH records its arguments.
mkdir -p "$tmp/stub"
cat >"$tmp/stub/zmigrate" <<EOF
#!/bin/sh
echo "\$*" >> "$tmp/stub/calls"
echo "UUID                                  PHASE  STATE   AGE  RUNTIME"
echo "5eed0000-0000-4000-8000-000000000101  sync   paused  1h   2m3s"
case " \$* " in *" --all "*)
echo "5eed0000-0000-4000-8000-000000000102  switch successful  2d  9m" ;;
esac
EOF
chmod +x "$tmp/stub/zmigrate"
PATH=$tmp/stub:$PATH
hash -r
expect_only "zmigrate sync 5e" 5eed0000-0000-4000-8000-000000000101
expect_only "zmigrate get 5e" 5eed0000-0000-4000-8000-000000000101 5eed0000-0000-4000-8000-000000000102
expect_only "zmigrate --state-dir /var/tmp/other watch 5eed0000-0000-4000-8000-0000000001" \
    5eed0000-0000-4000-8000-000000000101 5eed0000-0000-4000-8000-000000000102
grep -qx -- "--state-dir /var/tmp/other list --all" "$tmp/stub/calls" ||
    fail "the UUID listing did not get --state-dir (calls: $(tr '\n' ';' <"$tmp/stub/calls"))"

# 7. The man page renders without a warning.
warnings=$(groff -ww -z -man "$src/man/zmigrate.1" 2>&1) || fail "groff failed on man/zmigrate.1"
[ -z "$warnings" ] || fail "groff -ww warns on man/zmigrate.1: $warnings"
if command -v man >/dev/null; then
    warnings=$(MANWIDTH=80 man -l "$src/man/zmigrate.1" 2>&1 >/dev/null) || fail "man -l failed"
    [ -z "$warnings" ] || fail "man -l warns on man/zmigrate.1: $warnings"
fi

if [ "$failures" -gt 0 ]; then
    echo "FAIL: docs_bash_completion ($failures failures)"
    exit 1
fi
echo "ok: docs_bash_completion"
