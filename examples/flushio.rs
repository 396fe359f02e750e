use pulse_metrics::*;
fn main() {
    let dir = std::path::PathBuf::from("/tmp/flushio");
    let _ = std::fs::remove_dir_all(&dir);
    let store = Store::open(MetricsConfig {
        database_path: dir.join("m.db"),
        ..Default::default()
    })
    .unwrap();
    let keys: Vec<SeriesKey> = (0..255)
        .map(|i| SeriesKey::new("vm", format!("id{i}"), "cpu"))
        .collect();
    let mut ts = 1_793_491_200i64;
    let mut v = 1.2345678901234f64;
    for _ in 0..50 {
        let pts: Vec<Point> = keys
            .iter()
            .map(|k| {
                v = v * 1.0001 + 0.37;
                Point::new(k, v, ts * 1000)
            })
            .collect();
        store.write_batch(&pts).unwrap();
        store.flush().unwrap();
        ts += 5;
    }
    eprintln!("MARK");
    for _ in 0..200 {
        let pts: Vec<Point> = keys
            .iter()
            .map(|k| {
                v = v * 1.0001 + 0.37;
                Point::new(k, v, ts * 1000)
            })
            .collect();
        store.write_batch(&pts).unwrap();
        store.flush().unwrap();
        ts += 5;
    }
    eprintln!("END");
}
