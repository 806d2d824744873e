//! Configuration parsing: engine addresses (`Endpoint::parse`) and the CLI
//! config file through its public entry point (`ClientOptions::config_file`
//! + `resolve`, with an empty environment). Raw `serde_yaml_ng::Value`
//! parsing is not fuzzed: it has no node bound, so an alias bomb is an OOM
//! by design; the SDK's parse counts nodes first (src/config/yaml_bound.rs).
//!
//! Run with inputs large enough to hold alias bombs, seeded from
//! `fuzz/corpus/config_parse` and the YAML dictionary:
//!
//!   cargo fuzz run config_parse -- -max_len=65536 -dict=fuzz/yaml.dict
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use rstream::transport::Endpoint;
use rstream::ClientOptions;

fn scratch() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("rstream-fuzz-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        dir.join("config.yaml")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(endpoint) = Endpoint::parse(text) {
        assert!(endpoint.port() >= 1);
        let _ = Endpoint::parse(&endpoint.to_string());
    }
    let path = scratch();
    if std::fs::write(path, data).is_ok() {
        let _ = ClientOptions::from_env_with(|_| None)
            .config_file(path.as_path())
            .resolve();
    }
});
