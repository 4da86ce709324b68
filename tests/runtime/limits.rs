//! Calls that a service can bound: cancellation and deadlines, the memory budget, idle
//! arenas released. Each test failed on the code before these limits existed.

mod common;
use common::*;
use emcoder::{Error, LoadOptions, Model, PredictOptions, Stop, TokenizerChoice};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn ids(n: usize, len: usize) -> Vec<Vec<u32>> {
    (0..n as u32)
        .map(|s| {
            let mut v = vec![1];
            v.extend((0..len as u32 - 2).map(|i| (i * 31 + s * 7) % 500 + 3));
            v.push(2);
            v
        })
        .collect()
}

fn with_stop(stop: Stop, samples: u32) -> PredictOptions {
    PredictOptions {
        samples,
        stop,
        ..Default::default()
    }
}

#[test]
fn a_past_deadline_or_a_set_flag_cancels_and_the_model_stays_usable() {
    let model = load("tiny-f32", 2);
    let texts = ids(3, 20);
    let want = model
        .predict_ids(&texts, &with_stop(Stop::never(), 8))
        .unwrap();
    let past = Stop {
        flag: None,
        deadline: Some(Instant::now()),
        callback: None,
    };
    let e = model.predict_ids(&texts, &with_stop(past, 8)).unwrap_err();
    assert!(
        matches!(&e, Error::Cancelled(m) if m.contains("deadline")),
        "{e}"
    );
    let flag = Arc::new(AtomicBool::new(true));
    let set = Stop {
        flag: Some(flag),
        deadline: None,
        callback: None,
    };
    let e = model.predict_ids(&texts, &with_stop(set, 8)).unwrap_err();
    assert!(
        matches!(&e, Error::Cancelled(m) if m.contains("cancelled")),
        "{e}"
    );
    // Deterministic and adaptive calls stop too.
    let mut det = with_stop(
        Stop {
            flag: None,
            deadline: Some(Instant::now()),
            callback: None,
        },
        1,
    );
    det.deterministic = true;
    assert!(matches!(
        model.predict_ids(&texts, &det),
        Err(Error::Cancelled(_))
    ));
    det.deterministic = false;
    det.tolerance = Some(0.01);
    assert!(matches!(
        model.predict_ids(&texts, &det),
        Err(Error::Cancelled(_))
    ));
    // The model is unchanged: the same call gives the same numbers.
    assert_eq!(
        model
            .predict_ids(&texts, &with_stop(Stop::never(), 8))
            .unwrap(),
        want
    );
}

/// A flag set by another thread stops a long call in the middle (the call alone would run
/// for many layers of many chunks).
#[test]
fn a_flag_set_during_the_call_stops_it() {
    let opts = LoadOptions {
        tokenizer: TokenizerChoice::None,
        n_threads: 2,
        max_rows: 512,
        ..Default::default()
    };
    let model = Model::load(&fixture("tiny-f32"), &opts).unwrap();
    let texts = ids(64, 400);
    let flag = Arc::new(AtomicBool::new(false));
    let stop = Stop {
        flag: Some(flag.clone()),
        deadline: None,
        callback: None,
    };
    let setter = {
        let flag = flag.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            flag.store(true, Ordering::Relaxed);
        })
    };
    let r = model.predict_ids(&texts, &with_stop(stop, 500));
    setter.join().unwrap();
    assert!(matches!(r, Err(Error::Cancelled(_))), "not cancelled");
    // Usable afterwards.
    assert!(model
        .predict_ids(&texts[..2], &with_stop(Stop::never(), 3))
        .is_ok());
}

#[test]
fn a_call_beyond_the_memory_budget_fails_with_what_to_change() {
    let texts = ids(8, 100);
    let probe = load("tiny-f32", 2);
    let small = probe.call_scratch(&texts[..1], 2);
    let big = probe.call_scratch(&texts, 50);
    assert!(small < big);
    let opts = LoadOptions {
        tokenizer: TokenizerChoice::None,
        n_threads: 2,
        memory_budget: (small + big) / 2,
        ..Default::default()
    };
    let model = Model::load(&fixture("tiny-f32"), &opts).unwrap();
    assert_eq!(model.memory_budget(), (small + big) / 2);
    let e = model
        .predict_ids(&texts, &with_stop(Stop::never(), 50))
        .unwrap_err();
    assert!(
        matches!(&e, Error::OutOfMemory(m) if m.contains("memory_budget") && m.contains("max_rows")),
        "{e}"
    );
    // Smaller calls still run, with the numbers of an unlimited model.
    let got = model
        .predict_ids(&texts[..1], &with_stop(Stop::never(), 2))
        .unwrap();
    let want = probe
        .predict_ids(&texts[..1], &with_stop(Stop::never(), 2))
        .unwrap();
    assert_eq!(got, want);
    assert!(model.scratch_bytes() <= model.memory_budget());
}

/// After a burst of concurrent calls the model keeps one idle arena, not one per call.
#[test]
fn idle_arenas_above_one_are_released() {
    let model = load("tiny-f32", 2);
    let texts = ids(6, 60);
    let one = model.call_scratch(&texts, 20);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                model
                    .predict_ids(&texts, &with_stop(Stop::never(), 20))
                    .unwrap()
            });
        }
    });
    let held = model.scratch_bytes();
    assert!(
        held > 0 && held <= one,
        "{held} bytes idle, one call reserves {one}"
    );
}

/// The log callback (off by default) reports the kernels and the memory budget at load and
/// the arena's growth.
#[test]
fn the_log_callback_reports_kernels_budget_and_arena_growth() {
    use emcoder::log::{set_logger, Level};
    use std::sync::Mutex;
    let seen: Arc<Mutex<Vec<(Level, String)>>> = Default::default();
    let sink = seen.clone();
    set_logger(
        Some(Arc::new(move |l, m: &str| {
            sink.lock().unwrap().push((l, m.to_string()))
        })),
        Level::Debug,
    );
    let model = load("tiny-f32", 2);
    model
        .predict_ids(&ids(2, 30), &with_stop(Stop::never(), 4))
        .unwrap();
    set_logger(None, Level::Debug);
    let seen = seen.lock().unwrap();
    let load = seen
        .iter()
        .find(|(l, m)| *l == Level::Info && m.contains("tiny-f32"))
        .expect("a load message");
    assert!(
        load.1.contains("kernels at level") && load.1.contains("budget"),
        "{}",
        load.1
    );
    assert!(
        seen.iter()
            .any(|(l, m)| *l == Level::Debug && m.contains("arena grew")),
        "{seen:?}"
    );
}
