//! Prometheus remote write 1.0 on the wire: the protobuf messages of
//! `prometheus/prompb/remote.proto` and `types.proto` this exporter sends
//! (the subset it fills; field numbers as upstream), encoded by prost and
//! compressed with snappy's block format, as the protocol specifies.

/// `prometheus.WriteRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

/// `prometheus.TimeSeries`: labels sorted by name, samples by time.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Label {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct Sample {
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Unix ms.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// The request body: protobuf, then snappy (block format, not framed).
pub fn encode(request: &WriteRequest) -> Vec<u8> {
    let raw = prost::Message::encode_to_vec(request);
    snap::raw::Encoder::new()
        .compress_vec(&raw)
        .expect("snappy compresses any input that fits in memory")
}

/// Reverses [`encode`] (tests and the receiver in them).
pub fn decode(body: &[u8]) -> Result<WriteRequest, String> {
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| format!("not snappy: {e}"))?;
    prost::Message::decode(raw.as_slice()).map_err(|e| format!("not a WriteRequest: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_round_trips_and_matches_the_wire_format() {
        let req = WriteRequest {
            timeseries: vec![TimeSeries {
                labels: vec![Label {
                    name: "__name__".into(),
                    value: "pulse_cpu".into(),
                }],
                samples: vec![Sample {
                    value: 1.5,
                    timestamp: 1_700_000_000_000,
                }],
            }],
        };
        assert_eq!(decode(&encode(&req)).unwrap(), req);
        // Field 1 (timeseries), length-delimited; inside it field 1
        // (labels) and field 2 (samples): the layout Prometheus reads.
        let raw = prost::Message::encode_to_vec(&req);
        assert_eq!(raw[0], 0x0a);
        assert_eq!(raw[2], 0x0a);
        assert!(raw.windows(9).any(|w| w == b"pulse_cpu"));
        // Sample: double at field 1 (0x09), int64 at field 2 (0x10).
        let sample = [0x09u8];
        assert!(raw.windows(1).any(|w| w == sample));
    }
}
