//! Configuration parsing: engine addresses (`Endpoint::parse`), raw YAML,
//! and the CLI config file through its public entry point
//! (`ClientOptions::config_file` + `resolve`, with an empty environment).
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
    let _ = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(text);
    let path = scratch();
    if std::fs::write(path, data).is_ok() {
        let _ = ClientOptions::from_env_with(|_| None)
            .config_file(path.as_path())
            .resolve();
    }
});
