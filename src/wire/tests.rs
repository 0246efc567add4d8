use super::*;
use rand_xoshiro::Xoshiro256PlusPlus;
use rand_xoshiro::rand_core::{Rng, SeedableRng};

fn samples() -> Vec<(Vec<u32>, Vec<OriginState>)> {
    vec![
        (vec![0], vec![OriginState::default()]),
        (
            vec![1, u32::MAX, 7, 0x1234_5678],
            vec![
                OriginState {
                    have: 5,
                    fin: FIN_UNKNOWN,
                    flags: ORIGIN_CONNECTED,
                    send_end_us: SEND_END_UNKNOWN,
                },
                OriginState {
                    have: u64::MAX - 1,
                    fin: 9,
                    flags: 0,
                    send_end_us: 1_767_225_600_000_000,
                },
            ],
        ),
    ]
}

/// Two membership updates, as the SWIM messages carry them.
fn swim_updates() -> &'static [u8] {
    static UPDATES: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    UPDATES.get_or_init(|| {
        let mut updates = vec![0; 2 * kv::SWIM_UPDATE_BYTES];
        kv::write_swim_update(&mut updates[..11], 2, 1, 1_767_225_600_000_000);
        kv::write_swim_update(&mut updates[11..], 1023, 2, 4);
        updates
    })
}

fn kv_batches() -> (&'static [u8], &'static [u8]) {
    use std::sync::OnceLock;
    static BATCHES: OnceLock<(Vec<u8>, Vec<u8>)> = OnceLock::new();
    let (ops, results) = BATCHES.get_or_init(|| {
        let mut ops = Vec::new();
        kv::Op {
            kind: kv::OP_SET,
            request: 7,
            version: 3,
            key: b"k",
            value: b"value",
        }
        .append_to(&mut ops);
        kv::Op {
            kind: kv::OP_GET,
            request: 8,
            version: 0,
            key: b"key2",
            value: b"",
        }
        .append_to(&mut ops);
        let mut results = Vec::new();
        kv::OpResult {
            request: 7,
            status: kv::STATUS_OK,
            version: 0,
            value: b"",
        }
        .append_to(&mut results);
        kv::OpResult {
            request: 8,
            status: kv::STATUS_VALUE,
            version: 9,
            value: b"v",
        }
        .append_to(&mut results);
        (ops, results)
    });
    (ops, results)
}

fn messages<'a>(values: &'a [u32], states: &'a [OriginState]) -> Vec<Message<'a>> {
    let (ops, results) = kv_batches();
    vec![
        Message::RingEpoch(RingEpoch {
            epoch: 3,
            window: 64,
            sync_from: NO_NODE,
            seed: 99,
            send_left_us: 1_000_000,
            grace_left_us: 500_000,
            next: 1234,
            joiners: 0b101,
            members: Items::Host(&[2, 0, 1]),
            missing: Items::Host(&[17, 900, 1200]),
        }),
        Message::RingFreeze(RingFreeze { epoch: 7 }),
        Message::RingValue(RingValue {
            epoch: 1,
            k: 5,
            index: 6,
            value: u32::MAX,
            sent_us: 77,
        }),
        Message::RingConfirm(RingConfirm {
            epoch: 2,
            k: u64::MAX,
        }),
        Message::RingApprove(RingApprove {
            epoch: 2,
            index: 77,
        }),
        Message::RingReport(RingReport {
            epoch: 4,
            frozen: true,
            settled: true,
            closing: false,
            agreed: false,
            prefix: 100,
            approved: Items::Host(&[102, 105]),
        }),
        Message::RingSync(RingSync {
            epoch: 4,
            prefix: 100,
            count: 100,
            sum: u128::MAX - 5,
            entries: Items::Host(&[IndexValue {
                index: 102,
                value: 9,
            }]),
        }),
        Message::RingResult(RingResult {
            count: 10,
            sum: 1 << 100,
            epoch: 3,
        }),
        Message::RingSyncRequest(RingSyncRequest { epoch: 9 }),
        Message::AuthChallenge(super::auth::AuthChallenge { nonce: [3; 16] }),
        Message::AuthProof(super::auth::AuthProof { mac: [0xa5; 32] }),
        Message::LamportMessage(LamportMessage {
            clock: 42,
            vector: Items::Host(&[1, 0, 7]),
        }),
        Message::KvOps(kv::KvOps {
            target: NO_NODE,
            ops,
        }),
        Message::KvResults(kv::KvResults { results }),
        Message::KvMembership(kv::KvMembership {
            epoch: 2,
            replicas: 2,
            members: Items::Host(&[0, 2]),
        }),
        Message::KvCredit(kv::KvCredit {
            target: 1,
            batches: 7,
        }),
        Message::KvSwim(kv::KvSwim::new(kv::SWIM_ACK, 9, 3, swim_updates())),
        Message::KvSwim(kv::KvSwim::new(kv::SWIM_PING, u64::MAX, 0, &[])),
        Message::KvTree(kv::KvTree {
            session: 77,
            step: kv::TREE_VERDICTS,
            body: b"\x01\x80",
        }),
        Message::KvTree(kv::KvTree {
            session: 0,
            step: kv::TREE_END,
            body: b"",
        }),
        Message::Hello(Hello {
            version: 1,
            nodes: 4,
            node: 3,
            cluster: b"pollen-gossip",
        }),
        Message::Hello(Hello {
            version: 9,
            nodes: 1,
            node: 0,
            cluster: b"",
        }),
        Message::GossipBatch(GossipBatch {
            origin: 2,
            timestamp_us: 1_700_000_000_123_456,
            first_seq: 42,
            values: Items::Host(values),
        }),
        Message::GossipState(GossipState {
            origins: Items::Host(states),
        }),
    ]
}

fn encode_to_vec(message: &Message<'_>) -> Vec<u8> {
    let mut out = vec![0xAA; message.encoded_len() + 3];
    let length = message.encode(&mut out);
    assert_eq!(length, message.encoded_len());
    assert!(
        out[length..].iter().all(|&b| b == 0xAA),
        "encode wrote past its length"
    );
    out.truncate(length);
    out
}

#[test]
fn round_trip_every_message() {
    for (values, states) in samples() {
        for message in messages(&values, &states) {
            let frame = encode_to_vec(&message);
            assert_eq!(frame_len(&frame), Ok(Some(frame.len())));
            let decoded = Message::decode(&frame).expect("decodes");
            assert_eq!(decoded, message);
            // Re-encoding the borrowed (wire) form gives the same bytes.
            assert_eq!(encode_to_vec(&decoded), frame);
        }
    }
}

#[test]
fn truncation_at_every_byte_asks_for_more() {
    for (values, states) in samples() {
        for message in messages(&values, &states) {
            let frame = encode_to_vec(&message);
            for cut in 0..frame.len() {
                assert_eq!(frame_len(&frame[..cut]), Ok(None), "cut at {cut}");
            }
        }
    }
}

#[test]
fn two_frames_back_to_back_split_correctly() {
    let values = [5u32, 6];
    let states = [OriginState::default()];
    let all = messages(&values, &states);
    let mut stream = Vec::new();
    for message in &all {
        stream.extend(encode_to_vec(message));
    }
    let mut at = 0;
    for message in &all {
        let length = frame_len(&stream[at..]).unwrap().unwrap();
        assert_eq!(Message::decode(&stream[at..at + length]).unwrap(), *message);
        at += length;
    }
    assert_eq!(at, stream.len());
}

#[test]
fn length_field_out_of_range_is_an_error() {
    let mut frame = [0u8; 8];
    for bad in [0u32, 1, 4] {
        frame[..4].copy_from_slice(&bad.to_be_bytes());
        assert_eq!(frame_len(&frame), Err(WireError::LengthTooSmall(bad)));
    }
    for bad in [FRAME_BYTES_MAX as u32 + 1, u32::MAX] {
        frame[..4].copy_from_slice(&bad.to_be_bytes());
        // Known to be bad from the length field alone: no waiting for a gigabyte to arrive.
        assert_eq!(frame_len(&frame[..4]), Err(WireError::LengthTooLarge(bad)));
    }
}

#[test]
fn unknown_kind_is_an_error() {
    for kind in [0u8, 22, 99, 255] {
        let mut frame = vec![0u8; HEADER_LEN + 3];
        let length = frame.len() as u32;
        frame[..4].copy_from_slice(&length.to_be_bytes());
        frame[4] = kind;
        assert_eq!(Message::decode(&frame), Err(WireError::UnknownKind(kind)));
    }
}

#[test]
fn malformed_payloads_are_errors() {
    let frame_of = |kind: Kind, payload: &[u8]| {
        let mut frame = ((HEADER_LEN + payload.len()) as u32).to_be_bytes().to_vec();
        frame.push(kind as u8);
        frame.extend_from_slice(payload);
        frame
    };
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (frame_of(Kind::Hello, &[]), "too short"),
        (frame_of(Kind::Hello, &[0; 11]), "bad magic"),
        (frame_of(Kind::GossipBatch, &[0; 17]), "too short"),
        (frame_of(Kind::GossipBatch, &[0; 18]), "no values"),
        (
            frame_of(Kind::GossipBatch, &[0; 21]),
            "values not a whole number of u32",
        ),
        (frame_of(Kind::GossipState, &[]), "entry count out of range"),
        (
            frame_of(Kind::GossipState, &[0; 18]),
            "not a whole number of entries",
        ),
        (frame_of(Kind::KvCredit, &[0; 5]), "wrong length"),
        (frame_of(Kind::KvCredit, &[0; 7]), "wrong length"),
        (frame_of(Kind::KvSwim, &[1; 10]), "too short"),
        (frame_of(Kind::KvSwim, &[4; 11]), "unknown probe kind"),
        (frame_of(Kind::KvSwim, &[1; 12]), "updates not whole"),
        (
            frame_of(Kind::KvSwim, &[1; 11 + 7 * 11]),
            "too many updates",
        ),
        (frame_of(Kind::KvSwim, &[3; 22]), "unknown state"),
        (frame_of(Kind::KvTree, &[0; 4]), "too short"),
        (frame_of(Kind::KvTree, &[0, 0, 0, 0, 6]), "unknown step"),
    ];
    for (frame, why) in cases {
        match Message::decode(&frame) {
            Err(WireError::Malformed(_, reason)) => assert_eq!(reason, why),
            other => panic!("expected Malformed({why}), got {other:?}"),
        }
    }
    // A hello whose cluster length disagrees with the frame length.
    let mut hello = encode_to_vec(&Message::Hello(Hello {
        version: 1,
        nodes: 2,
        node: 1,
        cluster: b"abc",
    }));
    hello[HEADER_LEN + 10] = 4;
    assert!(matches!(
        Message::decode(&hello),
        Err(WireError::Malformed(
            Kind::Hello,
            "length does not match cluster name"
        ))
    ));
}

/// Random bytes, and random mutations of valid frames, never panic the decoder; whatever it
/// accepts re-encodes to the same bytes.
#[test]
fn garbage_never_panics() {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(7);
    let values = [1u32, 2, 3];
    let states = [OriginState::default(); 3];
    let valid: Vec<Vec<u8>> = messages(&values, &states)
        .iter()
        .map(encode_to_vec)
        .collect();
    let mut buffer = vec![0u8; 256];
    for round in 0..200_000 {
        let length = if round % 2 == 0 {
            let base = &valid[round / 2 % valid.len()];
            buffer[..base.len()].copy_from_slice(base);
            let flips = 1 + rng.next_u32() as usize % 3;
            for _ in 0..flips {
                let at = rng.next_u32() as usize % base.len();
                buffer[at] ^= 1 << (rng.next_u32() % 8);
            }
            base.len()
        } else {
            let length = rng.next_u32() as usize % buffer.len();
            for byte in &mut buffer[..length] {
                *byte = rng.next_u32() as u8;
            }
            length
        };
        let bytes = &buffer[..length];
        if let Ok(Some(frame_length)) = frame_len(bytes)
            && let Ok(message) = Message::decode(&bytes[..frame_length])
        {
            assert_eq!(encode_to_vec(&message), &bytes[..frame_length]);
        }
    }
}

#[test]
fn hello_checks_refuse_mismatches() {
    let hello = |version, nodes, node, cluster| Hello {
        version,
        nodes,
        node,
        cluster,
    };
    assert_eq!(check_hello(&hello(1, 4, 2, b"c"), b"c", 4, 0), Ok(2));
    assert!(
        check_hello(&hello(2, 4, 2, b"c"), b"c", 4, 0)
            .unwrap_err()
            .contains("version")
    );
    assert!(
        check_hello(&hello(1, 4, 2, b"x"), b"c", 4, 0)
            .unwrap_err()
            .contains("cluster")
    );
    assert!(
        check_hello(&hello(1, 5, 2, b"c"), b"c", 4, 0)
            .unwrap_err()
            .contains("nodes")
    );
    assert!(
        check_hello(&hello(1, 4, 4, b"c"), b"c", 4, 0)
            .unwrap_err()
            .contains("range")
    );
    assert!(
        check_hello(&hello(1, 4, 0, b"c"), b"c", 4, 0)
            .unwrap_err()
            .contains("ours")
    );
}

#[test]
fn batch_capacity_fits_the_frame_limit() {
    let values = vec![0u32; GOSSIP_BATCH_VALUES_MAX];
    let message = Message::GossipBatch(GossipBatch {
        origin: 0,
        timestamp_us: 0,
        first_seq: 0,
        values: Items::Host(&values),
    });
    assert!(message.encoded_len() <= FRAME_BYTES_MAX);
    assert!(message.encoded_len() + 4 > FRAME_BYTES_MAX);
}

#[test]
fn kv_batches_iterate_what_was_appended() {
    let (ops, results) = kv_batches();
    let decoded = kv::KvOps::decode(&[&[0xFF, 0xFF][..], ops].concat())
        .unwrap()
        .iter()
        .count();
    assert_eq!(decoded, 2);
    let batch = kv::KvResults { results };
    let statuses: Vec<u8> = batch.iter().map(|result| result.status).collect();
    assert_eq!(statuses, vec![kv::STATUS_OK, kv::STATUS_VALUE]);
    // A key length pointing past the end is refused at decode time.
    let mut broken = [&[0, 0][..], ops].concat();
    broken[2 + 18] = 200;
    assert!(kv::KvOps::decode(&broken).is_err());
}

/// Writes one frame of every sample message to `fuzz/seeds/frames/` (a chunking byte first, as
/// the `frames` fuzz target reads its input): `cargo test --lib -- --ignored frame_seeds`.
#[test]
#[ignore = "writes the fuzz seeds; run by hand"]
fn frame_seeds() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/frames");
    std::fs::create_dir_all(&dir).unwrap();
    let mut count = 0;
    for (values, states) in samples() {
        for message in messages(&values, &states) {
            let mut seed = vec![255u8];
            seed.extend_from_slice(&encode_to_vec(&message));
            let name = format!("{:?}-{count}", message.kind());
            std::fs::write(dir.join(name), seed).unwrap();
            count += 1;
        }
    }
    assert!(count > 0);
}
