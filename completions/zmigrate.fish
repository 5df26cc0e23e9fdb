# SPDX-License-Identifier: MPL-2.0
# fish completion for zmigrate(1): subcommands, options, and the instance UUIDs of migrations in
# the state store. Install as /usr/share/fish/vendor_completions.d/zmigrate.fish.
# tests/unit/cli/test_docs.cpp fails when a subcommand or long option is missing here.

set -l zmigrate_commands migrate begin sync pause switch rollback finalize abort evacuate restore watch estimate list get cleanup

# Instance UUIDs of migrations (`zmigrate list`, first column); $argv[1] is "active" or "all".
function __zmigrate_vms
    set -l tokens (commandline -opc)
    command -q $tokens[1]; or return
    set -l store_opts
    for i in (seq 2 (count $tokens))
        switch $tokens[$i]
            case --config --state-dir
                set -l next (math $i + 1)
                if test $next -le (count $tokens)
                    set store_opts $store_opts $tokens[$i] $tokens[$next]
                end
        end
    end
    set -l more
    if test "$argv[1]" = all
        set more --all
    end
    $tokens[1] $store_opts list $more 2>/dev/null | awk 'NR > 1 { print $1 }' | sort -u
end

complete -c zmigrate -f

# Global options.
complete -c zmigrate -n "not __fish_seen_subcommand_from $zmigrate_commands" -l config -r -F -d 'Configuration file'
complete -c zmigrate -n "not __fish_seen_subcommand_from $zmigrate_commands" -l state-dir -x -a '(__fish_complete_directories)' -d 'State directory'
complete -c zmigrate -n "not __fish_seen_subcommand_from $zmigrate_commands" -l log-dir -x -a '(__fish_complete_directories)' -d 'Log directory'
complete -c zmigrate -n "not __fish_seen_subcommand_from $zmigrate_commands" -l vmapi-url -x -d 'VMAPI URL'
complete -c zmigrate -n "not __fish_seen_subcommand_from $zmigrate_commands" -l cnapi-url -x -d 'CNAPI URL'
complete -c zmigrate -n "not __fish_seen_subcommand_from $zmigrate_commands" -l napi-url -x -d 'NAPI URL'
complete -c zmigrate -n "not __fish_seen_subcommand_from $zmigrate_commands" -l imgapi-url -x -d 'IMGAPI URL'
complete -c zmigrate -n "not __fish_seen_subcommand_from $zmigrate_commands" -s v -l verbose -d 'Mirror debug log lines to stderr'
complete -c zmigrate -n "not __fish_seen_subcommand_from $zmigrate_commands" -l take-over -d 'Take over a stale lease held on another head node'
complete -c zmigrate -n "not __fish_seen_subcommand_from $zmigrate_commands" -l version -d 'Print the version'
complete -c zmigrate -s h -l help -d 'Print help'
# Output options: global, and accepted after the arguments of watch, list and get.
complete -c zmigrate -n "not __fish_seen_subcommand_from $zmigrate_commands; or __fish_seen_subcommand_from watch list get cleanup" -s j -l json -d 'Machine-readable JSON output'
complete -c zmigrate -n "not __fish_seen_subcommand_from $zmigrate_commands; or __fish_seen_subcommand_from watch list get cleanup" -s q -l quiet -d 'Only errors and the final result'
complete -c zmigrate -n "not __fish_seen_subcommand_from $zmigrate_commands; or __fish_seen_subcommand_from watch list get cleanup" -l no-color -d 'No escape codes or live progress line'
complete -c zmigrate -n "not __fish_seen_subcommand_from $zmigrate_commands; or __fish_seen_subcommand_from watch list get cleanup" -l no-ansi -d 'Same as --no-color'

# Subcommands.
complete -c zmigrate -n "not __fish_seen_subcommand_from $zmigrate_commands" -a migrate -d 'Begin, sync until the delta converges, then switch'
complete -c zmigrate -n "not __fish_seen_subcommand_from $zmigrate_commands" -a begin -d 'Validate an instance, choose the target, prepare'
complete -c zmigrate -n "not __fish_seen_subcommand_from $zmigrate_commands" -a sync -d 'Copy the data to the target while it runs'
complete -c zmigrate -n "not __fish_seen_subcommand_from $zmigrate_commands" -a pause -d 'Stop the running sync; sync or migrate goes on later'
complete -c zmigrate -n "not __fish_seen_subcommand_from $zmigrate_commands" -a switch -d 'Stop, send the final delta, start on the target'
complete -c zmigrate -n "not __fish_seen_subcommand_from $zmigrate_commands" -a rollback -d 'After a switch, make the original primary again'
complete -c zmigrate -n "not __fish_seen_subcommand_from $zmigrate_commands" -a finalize -d 'After a switch, delete the original instance'
complete -c zmigrate -n "not __fish_seen_subcommand_from $zmigrate_commands" -a abort -d 'Before a switch, throw the target copy away'
complete -c zmigrate -n "not __fish_seen_subcommand_from $zmigrate_commands" -a watch -d 'Follow the running operation of a migration'
complete -c zmigrate -n "not __fish_seen_subcommand_from $zmigrate_commands" -a evacuate -d 'Migrate every instance off a compute node'
complete -c zmigrate -n "not __fish_seen_subcommand_from $zmigrate_commands" -a restore -d 'Move back what an evacuation took off a node'
complete -c zmigrate -n "not __fish_seen_subcommand_from $zmigrate_commands" -a estimate -d 'Bytes and time a full sync needs'
complete -c zmigrate -n "not __fish_seen_subcommand_from $zmigrate_commands" -a list -d 'List migrations'
complete -c zmigrate -n "not __fish_seen_subcommand_from $zmigrate_commands" -a get -d 'Show a migration in detail'
complete -c zmigrate -n "not __fish_seen_subcommand_from $zmigrate_commands" -a cleanup -d 'Remove live data-path keys and directories of every migration'
complete -c zmigrate -n "__fish_seen_subcommand_from cleanup" -l dry-run -d 'Only show what would be removed'

# migrate and begin.
complete -c zmigrate -n "__fish_seen_subcommand_from migrate begin" -s n -l target -x -d 'Target compute node'
complete -c zmigrate -n "__fish_seen_subcommand_from migrate begin" -l force-core -d 'Allow a Triton core instance'
complete -c zmigrate -n "__fish_seen_subcommand_from migrate begin" -l allow-older-platform -d 'Allow an older platform on the target'
complete -c zmigrate -n "__fish_seen_subcommand_from migrate" -l max-syncs -x -d 'Incremental syncs at most before switching'
complete -c zmigrate -n "__fish_seen_subcommand_from migrate" -l converge -x -d 'Switch once a delta is at most this size'
complete -c zmigrate -n "__fish_seen_subcommand_from migrate" -l finalize -d 'Finalize after a successful switch'
complete -c zmigrate -n "__fish_seen_subcommand_from migrate" -l offline -d 'Stop first, copy whole, start on the target'
complete -c zmigrate -n "__fish_seen_subcommand_from migrate" -l max-downtime -x -d 'Sync until the predicted downtime fits this budget'
complete -c zmigrate -n "__fish_seen_subcommand_from migrate" -l deadline -x -d 'With --max-downtime: stop syncing after this long'
complete -c zmigrate -n "__fish_seen_subcommand_from migrate" -l force-after-deadline -d 'With --max-downtime: switch anyway at the deadline'
complete -c zmigrate -n "__fish_seen_subcommand_from migrate sync" -l bwlimit -x -d 'Bytes per second at most'
complete -c zmigrate -n "__fish_seen_subcommand_from migrate" -l no-switch -d 'Stop ready to switch after the syncs'
complete -c zmigrate -n "__fish_seen_subcommand_from switch" -l ready -x -d 'Switch every ready migration from this compute node'
complete -c zmigrate -n "__fish_seen_subcommand_from migrate" -l dry-run -d 'Print the pre-flight summary; change nothing'
complete -c zmigrate -n "__fish_seen_subcommand_from begin" -l dry-run -d 'Print the plan and change nothing'

# Commands on an existing migration.
complete -c zmigrate -n "__fish_seen_subcommand_from sync" -l all -d 'Sync every migration waiting between begin and switch'
complete -c zmigrate -n "__fish_seen_subcommand_from sync" -l every -x -d 'Sync again after each such pause until switch takes over'
complete -c zmigrate -n "__fish_seen_subcommand_from sync pause switch rollback finalize abort" -a '(__zmigrate_vms active)' -d 'Instance'
complete -c zmigrate -n "__fish_seen_subcommand_from watch get" -a '(__zmigrate_vms all)' -d 'Instance'
complete -c zmigrate -n "__fish_seen_subcommand_from watch get" -l evacuation -x -d 'The newest evacuation or restore of this node'
complete -c zmigrate -n "__fish_seen_subcommand_from rollback" -l keep-changes -d 'First send the target changes back'
complete -c zmigrate -n "__fish_seen_subcommand_from rollback" -s y -l yes -d 'Do not ask for confirmation'
complete -c zmigrate -n "__fish_seen_subcommand_from finalize" -s y -l yes -d 'Do not ask for confirmation'

# evacuate.
complete -c zmigrate -n "__fish_seen_subcommand_from evacuate" -s n -l target -x -d 'Target compute node for every instance'
complete -c zmigrate -n "__fish_seen_subcommand_from evacuate" -l to -x -d 'Place instances only on this compute node'
complete -c zmigrate -n "__fish_seen_subcommand_from evacuate" -l exclude -x -d 'Leave this instance where it is'
complete -c zmigrate -n "__fish_seen_subcommand_from evacuate" -l separate-owners -d 'Prefer targets with fewest instances of the owner'
complete -c zmigrate -n "__fish_seen_subcommand_from evacuate" -l dry-run -d 'Show the plan; change nothing'
complete -c zmigrate -n "__fish_seen_subcommand_from evacuate" -l finalize -d 'Finalize each instance after its switch'
complete -c zmigrate -n "__fish_seen_subcommand_from evacuate" -l running-only -d 'Leave stopped instances on the node'
complete -c zmigrate -n "__fish_seen_subcommand_from evacuate" -l max-syncs -x -d 'Incremental syncs at most per instance'
complete -c zmigrate -n "__fish_seen_subcommand_from evacuate" -l converge -x -d 'Switch once a delta is at most this size'
complete -c zmigrate -n "__fish_seen_subcommand_from evacuate" -l force-core -d 'Also move Triton core instances'
complete -c zmigrate -n "__fish_seen_subcommand_from evacuate" -l allow-older-platform -d 'Allow targets with an older platform'
complete -c zmigrate -n "__fish_seen_subcommand_from evacuate" -l per-node -x -d 'At most this many into any one target node'
complete -c zmigrate -n "__fish_seen_subcommand_from evacuate" -l switch -x -a 'auto manual' -d 'Switch each once synced, or stop each ready'
complete -c zmigrate -n "__fish_seen_subcommand_from evacuate restore" -l parallel -x -d 'Instances migrated at once'
complete -c zmigrate -n "__fish_seen_subcommand_from evacuate restore" -l bwlimit -x -d 'Bytes per second shared by all transfers'

# restore.
complete -c zmigrate -n "__fish_seen_subcommand_from restore" -l dry-run -d 'Show which instances would go back; change nothing'
complete -c zmigrate -n "__fish_seen_subcommand_from restore" -l finalize -d 'Finalize each instance after its switch back'
complete -c zmigrate -n "__fish_seen_subcommand_from restore" -l max-syncs -x -d 'Incremental syncs at most per instance'
complete -c zmigrate -n "__fish_seen_subcommand_from restore" -l converge -x -d 'Switch once a delta is at most this size'

# estimate.
complete -c zmigrate -n "__fish_seen_subcommand_from estimate" -s s -l server -x -d 'Every active instance on this node'
complete -c zmigrate -n "__fish_seen_subcommand_from estimate" -l rate -x -d 'Transfer rate in MiB/s'
complete -c zmigrate -n "__fish_seen_subcommand_from estimate" -l parallel -x -d 'Concurrent streams'
complete -c zmigrate -n "__fish_seen_subcommand_from estimate" -l measure -d 'Time a short real transfer to the node of -n'
complete -c zmigrate -n "__fish_seen_subcommand_from estimate" -s n -l target -x -d 'With --measure: the node to measure to'
complete -c zmigrate -n "__fish_seen_subcommand_from estimate" -l measure-size -x -d 'With --measure: MiB to send'

# list.
complete -c zmigrate -n "__fish_seen_subcommand_from list" -s s -l state -x -a 'running paused failed successful' -d 'Only migrations in this state'
complete -c zmigrate -n "__fish_seen_subcommand_from list" -s n -l server -x -d 'Only migrations from or to this node'
complete -c zmigrate -n "__fish_seen_subcommand_from list" -s a -l all -d 'Include finished migrations'
complete -c zmigrate -n "__fish_seen_subcommand_from list" -l evacuation -x -d 'The migrations of the evacuation of this node'
complete -c zmigrate -n "__fish_seen_subcommand_from list" -s l -l long -d 'Also show nodes and error'
