//! `examples/stack/`: its tier configurations validate as the real binary reads them, and
//! the processing tier runs the reference tail-sampling policy of `tests/fixtures/` (one copy
//! of the policy; the stack's file shows it whole for its readers). The stack itself runs in
//! `test.sh` (`examples/stack/stack.sh check`).

use std::path::PathBuf;
use std::process::Command;

use crate::test_config::REFERENCE_SAMPLING;

fn example(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/stack")
        .join(name)
}

#[test]
fn stack_tier_configs_validate() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["gateway.toml", "processor.toml"] {
        let out = Command::new(env!("CARGO_BIN_EXE_shardtel"))
            .args(["validate", "--config"])
            .arg(example(name))
            .env("STACK_DIR", dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn stack_processor_runs_the_reference_policy() {
    let stack: toml::Table = std::fs::read_to_string(example("processor.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let reference: toml::Table = REFERENCE_SAMPLING.parse().unwrap();
    let sampler = |t: &toml::Table| t["processors"]["tail_sampling"].as_table().unwrap().clone();
    let (mut stack, mut reference) = (sampler(&stack), sampler(&reference));
    // The stack's check shortens the wait through the environment; its default is the reference's.
    assert_eq!(
        stack.remove("decision_wait").unwrap().as_str(),
        Some(format!(
            "${{STACK_DECISION_WAIT:-{}}}",
            reference.remove("decision_wait").unwrap().as_str().unwrap()
        ))
        .as_deref()
    );
    assert_eq!(stack, reference);
}
