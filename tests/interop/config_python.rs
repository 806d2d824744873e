//! Differential test: the configuration case table through the Python SDK's
//! own resolver (`rstream.config.resolve_client_options`, package
//! `rstreamlabs-rstream`) and through ours.
//!
//! For every case both SDKs support, the outcome (engine, auth kind, error
//! code) must be the same. A case where we deliberately differ says so
//! (`python: {differs: reason, ...}`) and states what Python does, which is
//! checked too, so the list of differences stays exact.
//!
//! Runs `tests/interop/config_resolve.py` with the interpreter named by
//! `RSTREAM_PYTHON`. Without it the test fails, unless
//! `RSTREAM_SKIP_PYTHON_INTEROP=1` is set, in which case it says loudly that
//! it skipped.

use crate::support::config_cases as harness;
use crate::support::python;

use std::io::Write as _;
use std::path::PathBuf;

use harness::{load_cases, prepare, run_rust, Fixture, Outcome, PythonExpect};
use serde_json::json;

fn python() -> Option<PathBuf> {
    python::interpreter("the Python configuration differential test")
}

#[test]
fn same_outcomes_as_the_python_sdk() {
    let Some(python) = python() else { return };
    let fx = Fixture::new("config-python");
    let cases = load_cases();

    let mut compared = Vec::new();
    let mut requests = Vec::new();
    let mut skipped = 0;
    for (i, case) in cases.iter().enumerate() {
        if let Some(PythonExpect::Skip { .. }) = &case.python {
            skipped += 1;
            continue;
        }
        assert!(
            !case.options.pure && !case.options.mtls_inline,
            "case {:?} uses an option Python does not have; mark it `python: {{skip: why}}`",
            case.name
        );
        let prepared = prepare(case, &fx, i);
        let ours = run_rust(&prepared, &fx);
        requests.push(json!({
            "name": case.name,
            "env": prepared.env,
            "options": prepared.options,
            "cert": fx.cert,
            "key": fx.key,
        }));
        compared.push((case, ours));
    }

    let theirs: Vec<Outcome> = python::run_batch(&python, "config_resolve.py", &requests);
    assert_eq!(theirs.len(), compared.len());

    let mut failures = Vec::new();
    let mut differences = 0;
    for ((case, ours), python) in compared.iter().zip(&theirs) {
        let problem = match &case.python {
            Some(PythonExpect::Differs { differs, outcome }) => {
                differences += 1;
                if !outcome.matches(python) {
                    Some(format!(
                        "documented difference ({differs}) no longer holds: Python now gives {python:?}, \
                         the case says {outcome:?}"
                    ))
                } else if ours.matches(python) {
                    Some(format!(
                        "documented difference ({differs}) but both give {ours:?}"
                    ))
                } else {
                    None
                }
            }
            Some(PythonExpect::Same(word)) if word != "same" => {
                Some(format!("unknown python marker {word:?}"))
            }
            _ => (!ours.matches(python)).then(|| format!("ours {ours:?}\n    python {python:?}")),
        };
        if let Some(p) = problem {
            failures.push(format!("[{}] {}\n    {p}", case.file, case.name));
        }
    }
    let _ = std::io::stderr().write_all(
        format!(
            "config differential: {} cases compared with Python ({} documented differences), {} skipped\n",
            compared.len(),
            differences,
            skipped
        )
        .as_bytes(),
    );
    assert!(
        failures.is_empty(),
        "{} of {} cases disagree with the Python SDK:\n{}",
        failures.len(),
        compared.len(),
        failures.join("\n")
    );
}
