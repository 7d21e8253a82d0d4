//! Fuzz target: what plugins return, as the broker validates and applies it (through
//! `quiver_broker::fuzzing`, which calls the pipeline's own functions): filter verdicts, router
//! routes (topics / counts / targets), transform output (any bytes, as a batch), and scheduler
//! delays, each against a batch built from the input. A plugin is untrusted code: whatever it
//! returns must end in a clean output failure or in records that pass what a producer's must.
//!
//! Input: byte 0 picks the world, then the batch, then the plugin's answer; `now` is fuzzed too
//! (the delay checks compare due times with it).

#![no_main]

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use quiver_broker::fuzzing::{self, Outcome};
use quiver_broker::headers;
use quiver_proto::batch::{compute_crc, Batch, FLAG_SPARSE};

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let _ = run(&mut u);
});

fn run(u: &mut Unstructured<'_>) -> Result<()> {
    let world: u8 = u.arbitrary()?;
    let now: i64 = if u.arbitrary()? {
        1_700_000_000_000
    } else {
        u.arbitrary()?
    };
    let Some(batch) = quiver_fuzz::batch(u)? else {
        return Ok(());
    };
    let count = batch.record_count() as usize;
    match world % 4 {
        0 => {
            let verdicts = answers(u, count, |u| u.arbitrary::<bool>())?;
            let kept = verdicts.iter().filter(|&&v| v).count();
            match fuzzing::filter(&batch, &verdicts) {
                Ok(Outcome::Same) => assert_eq!(kept, count),
                Ok(Outcome::Dropped) => assert_eq!(kept, 0),
                Ok(Outcome::Replaced(b)) => {
                    assert_eq!(b.record_count() as usize, kept);
                    dense(&b);
                }
                Ok(other) => panic!("a filter's verdicts gave {other:?}"),
                Err(_) => assert_ne!(verdicts.len(), count, "right-sized verdicts refused"),
            }
        }
        1 => {
            let topics = (0..u.int_in_range(0..=4)?)
                .map(|_| {
                    Ok(if u.ratio(3, 4)? {
                        u.choose(&["t1", "t2", ".bad", "", "a/b"])?.to_string()
                    } else {
                        u.arbitrary::<String>()?
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let counts = answers(u, count, |u| {
                Ok(if u.ratio(1, 16)? {
                    u.arbitrary()?
                } else {
                    u.int_in_range(0..=3)?
                })
            })?;
            let total: u64 = counts.iter().map(|&c| c as u64).sum();
            let n_targets = if u.ratio(1, 8)? {
                u.int_in_range(0..=16)?
            } else {
                total.min(1024) as usize
            };
            let targets = (0..n_targets)
                .map(|_| {
                    Ok(if u.ratio(1, 16)? {
                        u.arbitrary()?
                    } else {
                        u.int_in_range(0..=4)?
                    })
                })
                .collect::<Result<Vec<u32>>>()?;
            if let Ok(Outcome::Routed(parts)) =
                fuzzing::route(&batch, topics.clone(), counts.clone(), targets)
            {
                assert_eq!(counts.len(), count);
                for (topic, part) in parts {
                    assert!(topics.contains(&topic));
                    let part = part.expect("a topic in the plan has records");
                    assert!(part.record_count() as usize <= count);
                    dense(&part);
                }
            }
        }
        2 => {
            // Any bytes: usually a batch built from the input, maybe damaged, CRC fixed or not.
            let mut out = if u.arbitrary()? {
                match quiver_fuzz::batch(u)? {
                    Some(b) => b.bytes().to_vec(),
                    None => Vec::new(),
                }
            } else {
                u.arbitrary::<&[u8]>()?.to_vec()
            };
            if !out.is_empty() && u.arbitrary()? {
                let at = u.choose_index(out.len())?;
                out[at] = u.arbitrary()?;
            }
            if out.len() >= 24 && u.arbitrary()? {
                let crc = compute_crc(&out);
                out[20..24].copy_from_slice(&crc.to_le_bytes());
            }
            match fuzzing::transform(out, now) {
                Ok(Outcome::Replaced(b)) => {
                    dense(&b);
                    headers::check(&b).expect("accepted output has no reserved header");
                }
                Ok(Outcome::Dropped) | Err(_) => {}
                Ok(other) => panic!("a transform's output gave {other:?}"),
            }
        }
        _ => {
            let delays = answers(u, count, |u| {
                Ok(match u.int_in_range(0..=3)? {
                    0 => 0,
                    1 => u.int_in_range(1..=60_000)?,
                    _ => u.arbitrary()?,
                })
            })?;
            match fuzzing::schedule(&batch, &delays, now) {
                Ok(Outcome::Same) => assert!(delays.iter().all(|&d| d == 0)),
                Ok(Outcome::Replaced(b)) => {
                    assert_eq!(b.record_count() as usize, count);
                    dense(&b);
                }
                Ok(other) => panic!("a scheduler's delays gave {other:?}"),
                Err(_) => {}
            }
        }
    }
    Ok(())
}

/// One answer per record, or (one time in eight) a wrong number of them.
fn answers<T>(
    u: &mut Unstructured<'_>,
    count: usize,
    mut one: impl FnMut(&mut Unstructured<'_>) -> Result<T>,
) -> Result<Vec<T>> {
    let n = if u.ratio(1, 8)? {
        u.int_in_range(0..=count + 2)?
    } else {
        count
    };
    (0..n).map(|_| one(u)).collect()
}

/// What the broker appends must be a dense, valid batch.
fn dense(b: &Batch) {
    assert_eq!(
        b.header().flags & FLAG_SPARSE,
        0,
        "a sparse batch would be appended"
    );
    Batch::parse(b.bytes().clone()).expect("an appended batch parses with its CRC");
}
