# SPDX-License-Identifier: MPL-2.0
# bash completion for zmigrate(1): subcommands, options, and the instance UUIDs of migrations in
# the state store. Install as /usr/share/bash-completion/completions/zmigrate, or source it.
# tests/unit/cli/test_docs.cpp fails when a subcommand or long option is missing here.

# Instance UUIDs of migrations (`zmigrate list`, first column). Usage: _zmigrate_vms BIN
# active|all [GLOBAL OPTIONS...], the global options being those already typed (--state-dir).
_zmigrate_vms() {
    local bin=$1 which=$2
    shift 2
    local more=()
    [[ $which == all ]] && more=(--all)
    "$bin" "$@" list "${more[@]}" 2>/dev/null | awk 'NR > 1 { print $1 }' | sort -u
}

# COMPREPLY from compgen's lines (names with spaces stay whole).
_zmigrate_reply() {
    mapfile -t COMPREPLY < <(compgen "$@")
}

_zmigrate() {
    local cur=${COMP_WORDS[COMP_CWORD]}
    local prev=
    if ((COMP_CWORD > 0)); then
        prev=${COMP_WORDS[COMP_CWORD - 1]}
    fi
    local globals="--config --state-dir --log-dir --vmapi-url --cnapi-url --napi-url --imgapi-url
        -j --json -q --quiet --no-color --no-ansi -v --verbose --take-over --version -h --help"
    local commands="migrate begin sync pause switch rollback finalize abort evacuate restore watch estimate list get cleanup"

    # The subcommand is the first word that is neither an option nor an option's value; the
    # global options with a value are kept to reach the same state store when listing UUIDs.
    local i w cmd='' store_opts=()
    for ((i = 1; i < COMP_CWORD; i++)); do
        w=${COMP_WORDS[i]}
        case $w in
        --config | --state-dir)
            store_opts+=("$w" "${COMP_WORDS[i + 1]}")
            ((i++))
            ;;
        --log-dir | --vmapi-url | --cnapi-url | --napi-url | --imgapi-url)
            ((i++))
            ;;
        -*) ;;
        *)
            cmd=$w
            break
            ;;
        esac
    done

    # Values of options.
    case $prev in
    --config)
        _zmigrate_reply -f -- "$cur"
        return
        ;;
    --state-dir | --log-dir)
        _zmigrate_reply -d -- "$cur"
        return
        ;;
    --vmapi-url | --cnapi-url | --napi-url | --imgapi-url | --max-syncs | --converge | --rate | \
        --parallel | -n | --target | --server | --to | --exclude)
        return
        ;;
    -s | --state)
        if [[ $cmd == list ]]; then
            _zmigrate_reply -W "running paused failed successful" -- "$cur"
        fi
        return
        ;;
    esac

    if [[ -z $cmd ]]; then
        if [[ $cur == -* ]]; then
            _zmigrate_reply -W "$globals" -- "$cur"
        else
            _zmigrate_reply -W "$commands" -- "$cur"
        fi
        return
    fi

    local opts=
    case $cmd in
    migrate) opts="-n --target --max-syncs --converge --finalize --offline --max-downtime --deadline --force-after-deadline --bwlimit --no-switch --dry-run --force-core --allow-older-platform" ;;
    begin) opts="-n --target --dry-run --force-core --allow-older-platform" ;;
    sync) opts="--every --bwlimit --all" ;;
    rollback) opts="--keep-changes -y --yes" ;;
    finalize) opts="-y --yes" ;;
    evacuate) opts="-n --target --to --exclude --separate-owners --dry-run --finalize --running-only --force-core --allow-older-platform --max-syncs --converge --parallel --per-node --bwlimit --switch" ;;
    switch) opts="--ready" ;;
    restore) opts="--dry-run --finalize --max-syncs --converge --parallel --bwlimit" ;;
    estimate) opts="-s --server --rate --parallel --measure -n --target --measure-size" ;;
    list) opts="-s --state -n --server -a --all -l --long --evacuation" ;;
    watch | get) opts="--evacuation" ;;
    cleanup) opts="--dry-run" ;;
    esac
    case $cmd in
    watch | list | get | cleanup) opts="$opts -j --json -q --quiet --no-color --no-ansi" ;;
    esac
    opts="$opts -h --help"

    if [[ $cur == -* ]]; then
        _zmigrate_reply -W "$opts" -- "$cur"
        return
    fi
    case $cmd in
    sync | pause | switch | rollback | finalize | abort)
        _zmigrate_reply -W "$(_zmigrate_vms "${COMP_WORDS[0]}" active "${store_opts[@]}")" -- "$cur"
        ;;
    watch | get)
        _zmigrate_reply -W "$(_zmigrate_vms "${COMP_WORDS[0]}" all "${store_opts[@]}")" -- "$cur"
        ;;
    esac
}

complete -F _zmigrate zmigrate
