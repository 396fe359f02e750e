//! The keys of the storage-health stats that the contract promises, shared
//! by the HTTP API's and the command line's tests (`/api/metrics-store/stats`
//! and `pulse-metrics stats` answer the same object).

/// Keys every stats answer has (the HTTP answer adds `collectors`).
pub const STATS_KEYS: &[&str] = &[
    "enabled",
    "dbPath",
    "dbSize",
    "walSize",
    "freePages",
    "seriesCount",
    "rawCount",
    "minuteCount",
    "hourlyCount",
    "dailyCount",
    "oldestDataTimestamp",
    "totalWrites",
    "droppedWrites",
    "bufferSize",
    "lastFlush",
    "lastRollup",
    "lastRetention",
    "lastVacuum",
    "lastError",
];

/// Asserts that `stats` has every key of `STATS_KEYS`.
pub fn assert_stats_keys(stats: &serde_json::Value) {
    for key in STATS_KEYS {
        assert!(stats.get(key).is_some(), "stats lacks {key}: {stats}");
    }
}
