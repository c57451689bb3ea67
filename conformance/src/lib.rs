//! # coordkit-conformance
//!
//! The contract every coordkit backend must pass — the primitive and the recipes built
//! on it (locks, sessions, elections, registry, config) — as public async functions — one per
//! property — and macros that expand to one `#[tokio::test]` per case, so a failure
//! shows its name.
//!
//! A backend crate adds this crate as a dev-dependency, implements [`Harness`] (how to
//! open a new connection to the store under test) and invokes the macros from a file
//! in its `tests/`:
//!
//! ```ignore
//! fn harness() -> Option<std::sync::Arc<dyn coordkit_conformance::Harness>> {
//!     Some(std::sync::Arc::new(MyHarness::new()))
//! }
//! // Every backend: the primitive's contract.
//! coordkit_conformance::conformance_tests!(harness, start_paused = false);
//! // Backends whose harness can inject faults (see `Faults`).
//! coordkit_conformance::fault_tests!(harness, start_paused = false);
//! ```
//!
//! `start_paused = true` runs each case on tokio's paused clock; use it when the
//! backend's leases expire on tokio's clock (as coordkit-memory's do), so TTLs pass
//! instantly. Every case runs in a fresh namespace, so cases never see each other's
//! keys.
//!
//! A backend that needs a server the test machine may lack adds
//! `ignore = "why"`: each case is then `#[ignore]`d, shown as ignored by a plain
//! `cargo test`, and run by `cargo test -- --include-ignored` (where a missing
//! server must fail: let the harness factory panic with what is missing). A
//! factory that returns `None` makes each case fail.
//!
//! ```ignore
//! coordkit_conformance::conformance_tests!(harness, start_paused = false, ignore = "needs etcd");
//! ```

#![warn(missing_docs, missing_debug_implementations)]

pub mod cases;
mod context;
pub mod linearizability;
pub mod lock_safety;
mod model;
mod rules;

pub use context::{Ctx, Faults, Harness, TestClient};
pub use model::EXPIRY_TOLERANCE;

#[doc(hidden)]
pub use context::run;

/// Expand to one `#[tokio::test]` per case of the primitive's contract.
///
/// `$factory` is a function `fn() -> Option<Arc<dyn Harness>>`.
#[macro_export]
macro_rules! conformance_tests {
    ($factory:path, start_paused = $paused:literal $(, ignore = $why:literal)?) => {
        $crate::__cases!($factory, $paused, [$(#[ignore = $why])?];
            fresh_namespace_is_empty,
            put_then_get_round_trips,
            each_write_gets_a_larger_revision,
            put_again_keeps_create_revision_and_bumps_version,
            delete_then_put_recreates_the_key,
            delete_of_missing_key_changes_nothing,
            read_only_txn_keeps_the_revision,
            range_prefix_returns_only_the_prefix_in_key_order,
            range_limit_reports_more_and_total_count,
            range_limit_zero_is_invalid,
            range_sorts_by_create_revision,
            range_filters_by_max_create_revision,
            range_count_only_returns_no_values,
            range_at_past_revision_sees_old_state,
            range_at_future_revision_is_invalid,
            delete_prefix_deletes_only_the_prefix_in_one_revision,
            prev_kv_on_put_and_delete,
            compare_value_in_both_branches,
            compare_version_in_both_branches,
            compare_create_revision_in_both_branches,
            compare_mod_revision_in_both_branches,
            compare_lease_in_both_branches,
            compare_on_missing_key_uses_zero_and_fails_on_value,
            multi_op_txn_is_atomic_and_watched_as_one_response,
            txn_range_sees_earlier_writes_of_the_same_txn,
            txn_range_reports_the_txn_revision,
            concurrent_history_is_linearizable,
            txn_writing_one_key_twice_is_invalid,
            observed_read_sees_what_its_handle_observed,
            observed_read_with_a_write_is_invalid,
            compare_and_swap_conflict_carries_current_version,
            create_if_absent_returns_the_existing_key,
            concurrent_cas_increments_reach_exactly_400,
            lease_time_to_live_lists_attached_keys,
            lease_expiry_deletes_all_keys_in_one_revision,
            keep_alive_extends_the_lease,
            revoke_deletes_keys_and_forgets_the_lease,
            put_with_unknown_lease_is_lease_not_found_and_applies_nothing,
            put_without_lease_detaches_the_key,
            watch_from_now_sees_puts_and_deletes,
            watch_reporting_start_misses_nothing_after_it,
            watch_replays_from_a_past_revision,
            watch_from_a_future_revision_starts_there,
            watch_prefix_sees_only_the_prefix,
            watch_across_many_writers_is_ordered_without_gaps,
            watch_prev_kv_carries_previous_values,
            watch_delete_event_carries_key_and_revision_only,
            watch_lease_expiry_arrives_as_one_response,
            watch_from_compacted_revision_yields_compacted,
            range_at_compacted_revision_is_compacted,
            compact_rules,
            namespaces_isolate_keys_and_strip_their_prefix,
            empty_key_is_invalid_everywhere,
            ttl_rules_are_enforced,
            value_over_the_limit_is_invalid,
            non_positive_revisions_are_invalid,
            too_many_txn_ops_is_invalid,
            random_operations_match_the_model,
            // Locks and sessions.
            lock_excludes_holders_and_tokens_increase,
            lock_waiters_are_served_in_arrival_order,
            try_acquire_on_held_lock_is_conflict_and_leaves_no_key,
            queued_waiter_whose_lease_ends_gets_lock_expired,
            cancelled_acquire_removes_its_key,
            dropped_guard_releases_the_lock,
            unlock_only_deletes_its_own_key,
            guard_compare_holds_only_while_held,
            lost_completes_when_the_key_is_taken_away,
            revoked_lease_loses_the_lock,
            tasks_of_one_coordinator_queue_locally,
            close_releases_locks_at_once,
            sessions_are_shared_per_ttl_and_replaced_when_lost,
            lock_input_is_validated,
            queue_lists_holder_then_waiters_and_try_campaign,
            // Semaphores and read-write locks.
            semaphore_admits_at_most_its_permits,
            semaphore_shares_its_permits_then_serves_waiters_in_order,
            semaphore_release_of_any_holder_admits_the_next_waiter,
            semaphore_release_of_a_newer_holder_admits_no_one_past_the_permits,
            semaphore_with_mismatched_permits_is_invalid,
            shared_claims_of_one_session_reuse_their_keys,
            semaphore_lease_loss_and_cancellation_free_the_queue,
            rw_lock_readers_share_and_writers_are_not_starved,
            rw_lock_writers_exclude_everyone,
            rw_lock_lease_loss_and_cancellation_free_the_queue,
            // Counters.
            counter_adds_are_exact_under_concurrency,
            counter_compare_and_set_and_input_rules,
            // Config center and registry extras.
            config_watch_from_a_version_delivers_every_change_since,
            config_watch_from_a_compacted_version_is_compacted,
            config_delete_if_version_deletes_only_what_was_read,
            config_update_many_is_all_or_nothing,
            config_codecs_apply_per_center_and_per_key,
            config_manager_composes_a_value_from_a_prefix,
            registry_lists_service_names_with_counts,
            config_export_and_import_round_trip_exactly,
            config_import_compares_on_what_it_planned,
            config_import_refuses_a_bad_document,
            config_values_under_an_encrypted_prefix_are_sealed_in_the_store,
            config_gray_release_reaches_exactly_the_matching_managers,
            // Barriers.
            barrier_holds_waiters_until_removed,
            double_barrier_starts_and_finishes_together,
            double_barrier_dead_or_cancelled_participants_do_not_count,
            // Nothing left behind.
            compaction_past_an_idle_holder_does_not_blind_it,
            a_leftover_claim_is_never_re_adopted,
            fencing_tokens_strictly_increase,
            impossible_ttls_are_invalid,
            // Leader election.
            election_changes_are_observed_in_order,
            leader_whose_lease_ends_is_replaced,
            queued_candidate_whose_lease_ends_gets_lock_expired,
            dropped_or_closed_leadership_hands_over,
            election_input_is_validated,
            leader_latch_campaigns_again_after_losing,
            election_resumes_on_the_same_lease_after_a_restart,
            a_resume_ends_no_lease_it_does_not_own_and_close_releases_it,
            // Config center and ConfigManager.
            config_values_round_trip,
            config_cas_conflict_carries_current_version,
            config_concurrent_cas_increments_reach_exactly_400,
            config_watch_delivers_rapid_updates_in_order,
            config_watch_prefix_sees_puts_and_deletes,
            config_undecodable_values_are_error_items,
            config_history_and_rollback,
            config_rollback_if_version_compares_on_the_version_seen,
            config_history_after_compaction_is_shorter,
            config_input_is_validated,
            config_manager_applies_only_valid_values,
            config_manager_survives_panicking_hooks,
            config_manager_starts_with_the_stored_value,
            // Service registry.
            registry_register_discover_unregister,
            registry_watch_starts_with_snapshot_then_changes,
            registration_reregisters_after_its_lease_is_revoked,
            registering_an_existing_id_replaces_it,
            registry_cache_follows_random_changes,
            registry_skips_malformed_entries,
            registry_input_is_validated,
            registry_instances_carry_tags_weight_and_health_and_filter,
            registry_updates_are_followed_and_keep_the_registration,
            registry_health_checker_writes_changes,
            registry_pickers_follow_their_strategy,
            registry_least_outstanding_remembers_requests_across_a_flap,
            registry_etcd_naming_matches_the_grpc_go_format,
            registry_deregister_by_id_uses_the_id_index,
            registry_cache_holds_the_last_instances_when_a_service_empties,
            registry_persistent_instances_stay_until_deregistered,
            registry_verdicts_are_compared_and_folded_into_reads,
            registry_a_prober_removes_only_persistent_instances,
            // Every write survives an answer it never got (AmbiguousWrites).
            ambiguous_a_counter_add_counts_once,
            ambiguous_a_counter_compare_and_set_reports_its_own_write,
            ambiguous_a_barrier_set_reports_its_own_write,
            ambiguous_a_barrier_remove_reports_its_own_delete,
            ambiguous_last_to_enter_a_double_barrier_opens_it,
            ambiguous_a_counter_set_leaves_its_value,
            ambiguous_a_config_set_then_delete_leaves_no_key,
            ambiguous_a_write_lock_is_taken_and_released,
            ambiguous_a_health_change_is_advertised,
            ambiguous_a_resumed_leadership_proclaims_and_resigns,
            ambiguous_random_runs_keep_every_invariant,
            ambiguous_a_config_batch_is_reported_as_applied_or_unknown_never_as_a_conflict,
            ambiguous_a_config_compare_and_set_reports_its_own_write,
            ambiguous_an_import_is_reported_applied_or_unknown,
            ambiguous_a_persistent_registration_is_written_whole,
            ambiguous_a_verdict_is_recorded_once,
            ambiguous_a_probed_removal_is_whole,
            ambiguous_a_gray_promotion_is_whole,
            ambiguous_a_gray_release_is_set_and_dropped_once,
            ambiguous_a_config_delete_if_version_reports_its_own_delete,
            ambiguous_a_config_rollback_reports_its_own_write,
            ambiguous_a_config_rollback_if_version_reports_its_own_write,
            ambiguous_a_lock_acquire_holds_or_leaves_no_key_and_unlocks,
            ambiguous_a_semaphore_permit_is_taken_and_given_back,
            ambiguous_a_leadership_is_won_proclaimed_and_resigned,
            ambiguous_a_registration_updated_then_deregistered_is_gone,
        );
    };
}

/// Expand to one `#[tokio::test]` per fault-injection case. The harness's clients
/// must carry [`Faults`]; a case whose client has none fails.
#[macro_export]
macro_rules! fault_tests {
    ($factory:path, start_paused = $paused:literal $(, ignore = $why:literal)?) => {
        $crate::__cases!($factory, $paused, [$(#[ignore = $why])?];
            injected_faults_take_effect,
            concurrent_history_with_lost_responses_is_linearizable,
            counter_add_whose_answer_is_lost_counts_once,
            failed_calls_fail_exactly_n_times,
            lost_response_write_is_committed,
            stalled_keep_alives_let_the_lease_expire,
            cut_watch_resumes_without_gap_or_duplicate,
            cut_watch_after_compaction_yields_compacted,
            partition_fails_calls_and_watch_catches_up_after_heal,
            partition_leaves_other_clients_working,
            expired_lease_deletes_its_keys_at_once,
            // Recipes under faults.
            stalled_keep_alives_lose_the_lock_and_free_it,
            partitioned_holder_reports_loss_before_the_store_expires_it,
            keep_alives_resumed_in_time_keep_the_lock,
            queued_waiter_whose_keep_alives_stop_gets_lock_expired,
            waiter_whose_watch_lags_takes_the_lock_soon_after_release,
            semaphore_waiter_whose_watches_lag_gets_a_permit_soon,
            unlock_after_a_lost_response_never_deletes_the_next_holder,
            cut_watch_while_queued_still_hands_over,
            stalled_leader_is_replaced,
            observer_catches_up_after_compaction_while_cut_off,
            config_watch_cut_resumes_without_gap_or_duplicate,
            config_watch_resyncs_after_compaction,
            config_manager_starts_from_its_snapshot_with_the_store_down,
            config_manager_rides_out_partitions,
            stalled_registration_disappears_and_returns,
            partitioned_registration_returns_within_a_keep_alive_interval,
            cache_converges_after_compaction_while_cut_off,
            cache_converges_after_a_partition,
            every_session_of_a_service_lost_at_once_is_served_from_the_last_set,
            service_cache_starts_warm_from_its_snapshot_with_the_store_down,
            ambiguous_random_runs_under_partitions_compaction_and_expiry,
            // Nothing left behind.
            dropped_guard_during_an_outage_is_released_after_it,
            cancelled_unlock_during_an_outage_still_releases,
            cancelled_acquire_during_an_outage_leaves_no_key,
            dropped_registration_during_an_outage_is_removed_after_it,
            cancelled_deregister_still_removes_the_instance,
            cancelled_register_leaves_no_key,
            retried_proclaim_is_not_a_loss,
            transient_error_does_not_undo_unregister,
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __cases {
    ($factory:path, $paused:literal, $attrs:tt; $($case:ident),* $(,)?) => {
        $(
            $crate::__case!($factory, $paused, $attrs, $case);
        )*
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __case {
    ($factory:path, $paused:literal, [$(#[$attr:meta])*], $case:ident) => {
        #[tokio::test(start_paused = $paused)]
        $(#[$attr])*
        async fn $case() {
            $crate::run($factory(), stringify!($case), $paused, |ctx| {
                Box::pin($crate::cases::$case(ctx))
            })
            .await;
        }
    };
}
