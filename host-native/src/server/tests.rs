use super::*;
use crate::tls::test_certs;

fn config_error(config: &ServerConfig) -> String {
    match config.security() {
        Ok(_) => panic!("accepted: {config:?}"),
        Err(error) => error.to_string(),
    }
}

#[test]
fn the_pending_handshake_cap_is_a_setting() {
    assert_eq!(ServerConfig::default().max_pending_handshakes, 64);
    let config: ServerConfig = toml::from_str("max_pending_handshakes = 8").unwrap();
    assert_eq!(config.max_pending_handshakes, 8);
}

#[test]
fn storage_memory_settings_reach_the_storage_config() {
    let defaults = ServerConfig::default().storage_config(OnDamagedStore::Refuse);
    assert_eq!(defaults.cache_bytes, storage::DEFAULT_CACHE_BYTES);
    assert_eq!(defaults.max_scan_bytes, storage::DEFAULT_MAX_SCAN_BYTES);
    let config: ServerConfig = toml::from_str(
        "storage_cache_bytes = 16777216\nstorage_scan_bytes = 65536\ndata_dir = \"/d\"",
    )
    .unwrap();
    let storage = config.storage_config(OnDamagedStore::Refuse);
    assert_eq!(storage.cache_bytes, 16 << 20);
    assert_eq!(storage.max_scan_bytes, 64 << 10);
    assert_eq!(storage.path, PathBuf::from("/d"));
    assert!(toml::from_str::<ServerConfig>("storage_cache = 1").is_err());
}

#[test]
fn hint_delivery_interval_is_read_under_its_name_and_its_earlier_one() {
    let new: ServerConfig = toml::from_str("hint_delivery_interval_ms = 250").unwrap();
    let old: ServerConfig = toml::from_str("handoff_interval_ms = 250").unwrap();
    assert_eq!(new.hint_delivery_interval_ms, 250);
    assert_eq!(old.hint_delivery_interval_ms, 250);
    assert_ne!(ServerConfig::default().hint_delivery_interval_ms, 250);
}

#[test]
fn security_settings_are_read_from_toml_and_typos_refused() {
    let config: ServerConfig = toml::from_str(
        r#"
        tls_cert = "/etc/ringkv/http.pem"
        tls_key = "/etc/ringkv/http.key"
        peer_tls_cert = "/etc/ringkv/peer.pem"
        peer_tls_key = "/etc/ringkv/peer.key"
        peer_tls_ca = "/etc/ringkv/ca.pem"
        cluster_secret = "0123456789abcdef"
        "#,
    )
    .unwrap();
    assert_eq!(
        config.peer_tls_ca,
        Some(PathBuf::from("/etc/ringkv/ca.pem"))
    );
    assert!(!format!("{config:?}").contains("0123456789abcdef"));
    assert!(toml::from_str::<ServerConfig>("tls_crt = \"x\"").is_err());
}

#[test]
fn complete_settings_build() {
    let files = test_certs::generate();
    let secret_file = files.dir.path().join("secret");
    std::fs::write(&secret_file, "a cluster secret of some length\n").unwrap();
    let config = ServerConfig {
        tls_cert: Some(files.cert.clone()),
        tls_key: Some(files.key.clone()),
        peer_tls_cert: Some(files.cert.clone()),
        peer_tls_key: Some(files.key.clone()),
        peer_tls_ca: Some(files.ca.clone()),
        cluster_secret_file: Some(secret_file),
        ..ServerConfig::default()
    };
    let security = config.security().unwrap();
    assert!(security.http_tls.is_some() && security.peer_tls.is_some());
    // The final newline is not part of the secret.
    assert_eq!(
        security.secret,
        Some(ClusterSecret::new("a cluster secret of some length").unwrap())
    );
    let plain = ServerConfig::default().security().unwrap();
    assert!(plain.http_tls.is_none() && plain.peer_tls.is_none() && plain.secret.is_none());
}

#[test]
fn half_configured_or_unreadable_settings_are_clear_errors() {
    let files = test_certs::generate();
    let garbage = files.dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    let base = ServerConfig::default;

    let error = config_error(&ServerConfig {
        tls_cert: Some(files.cert.clone()),
        ..base()
    });
    assert!(error.contains("tls_cert is set without tls_key"), "{error}");
    let error = config_error(&ServerConfig {
        tls_key: Some(files.key.clone()),
        ..base()
    });
    assert!(error.contains("tls_key is set without tls_cert"), "{error}");
    let error = config_error(&ServerConfig {
        tls_cert: Some(garbage.clone()),
        tls_key: Some(files.key.clone()),
        ..base()
    });
    assert!(
        error.contains("garbage.pem") && error.contains("no PEM certificate"),
        "{error}"
    );
    let error = config_error(&ServerConfig {
        peer_tls_cert: Some(files.cert.clone()),
        peer_tls_key: Some(files.key.clone()),
        ..base()
    });
    assert!(error.contains("missing peer_tls_ca"), "{error}");
    let error = config_error(&ServerConfig {
        peer_tls_cert: Some(files.cert.clone()),
        peer_tls_key: Some(files.key.clone()),
        peer_tls_ca: Some(garbage.clone()),
        ..base()
    });
    assert!(
        error.contains("CA") && error.contains("garbage.pem"),
        "{error}"
    );
    let error = config_error(&ServerConfig {
        cluster_secret: Some(SecretString("short".into())),
        ..base()
    });
    assert!(error.contains("at least 16"), "{error}");
    let error = config_error(&ServerConfig {
        cluster_secret: Some(SecretString("0123456789abcdef".into())),
        cluster_secret_file: Some(garbage.clone()),
        ..base()
    });
    assert!(error.contains("not both"), "{error}");
    let error = config_error(&ServerConfig {
        cluster_secret_file: Some(files.dir.path().join("absent")),
        ..base()
    });
    assert!(error.contains("cluster_secret_file"), "{error}");
}

#[test]
fn the_damaged_store_policy_has_one_default() {
    assert_eq!(OnDamagedStore::default(), OnDamagedStore::Quarantine);
    assert_eq!(
        ServerConfig::default().on_damaged_store,
        OnDamagedStore::default()
    );
    let parsed: ServerConfig = toml::from_str("").unwrap();
    assert_eq!(parsed.on_damaged_store, OnDamagedStore::default());
}

#[tokio::test]
async fn a_bad_setting_stops_the_start_before_the_data_folder_is_touched() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let result = start(ServerConfig {
        data_dir: data_dir.clone(),
        tls_cert: Some(dir.path().join("absent.pem")),
        tls_key: Some(dir.path().join("absent.key")),
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        peer_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..ServerConfig::default()
    })
    .await;
    let Err(error) = result else {
        panic!("started with missing certificate files");
    };
    assert!(matches!(error, ServerError::Tls(_)), "{error}");
    assert!(error.to_string().contains("absent.pem"), "{error}");
    assert!(!data_dir.exists());
}

use crate::storage::DB_FILE_NAME;

fn damaged_folder(seeds: Vec<String>) -> (tempfile::TempDir, ServerConfig) {
    let dir = tempfile::tempdir().unwrap();
    let config = ServerConfig {
        node_id: Some("n1".into()),
        data_dir: dir.path().to_path_buf(),
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        peer_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        seeds,
        ..ServerConfig::default()
    };
    claim_identity(&config.data_dir, &config).unwrap();
    std::fs::write(dir.path().join(DB_FILE_NAME), vec![0xA5; 64 * 1024]).unwrap();
    (dir, config)
}

fn moved_aside(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|entry| {
            entry.as_ref().is_ok_and(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("{DB_FILE_NAME}.damaged-"))
            })
        })
        .count()
}

#[tokio::test]
async fn a_damaged_store_is_left_in_place_without_seeds_or_when_refused() {
    let (dir, config) = damaged_folder(Vec::new());
    match start(config).await {
        Err(ServerError::DamagedStore { advice, .. }) => assert!(advice.contains("--seed")),
        other => panic!("started over a damaged store: {:?}", other.err()),
    }
    assert!(dir.path().join(DB_FILE_NAME).exists());
    assert_eq!(moved_aside(dir.path()), 0);

    let (dir, mut config) = damaged_folder(vec!["127.0.0.1:1".into()]);
    config.on_damaged_store = OnDamagedStore::Refuse;
    match start(config).await {
        Err(ServerError::DamagedStore { advice, .. }) => assert!(advice.contains("refuse")),
        other => panic!("started over a damaged store: {:?}", other.err()),
    }
    assert_eq!(moved_aside(dir.path()), 0);
}

#[tokio::test]
async fn a_damaged_store_is_moved_aside_when_the_node_has_seeds() {
    // The seed does not answer, so the start fails after storage was opened: the damaged
    // file has been moved aside and an empty one created.
    let (dir, config) = damaged_folder(vec!["127.0.0.1:1".into()]);
    match start(config).await {
        Err(ServerError::Seeds(_)) => {}
        other => panic!(
            "expected the unreachable seed to fail the start: {:?}",
            other.err()
        ),
    }
    assert_eq!(moved_aside(dir.path()), 1);
    assert!(dir.path().join(DB_FILE_NAME).exists());
}

#[tokio::test]
async fn a_node_whose_store_was_moved_aside_refuses_to_found_a_cluster_until_it_rejoins() {
    let (dir, config) = damaged_folder(vec!["127.0.0.1:1".into()]);
    assert!(matches!(
        start(config.clone()).await,
        Err(ServerError::Seeds(_))
    ));
    let marker = dir.path().join(MUST_REJOIN_FILE_NAME);
    let text = std::fs::read_to_string(&marker).unwrap();
    assert!(text.contains(".damaged-"), "{text}");

    // Without seeds the empty store (no view) must not become a new cluster.
    let alone = ServerConfig {
        seeds: Vec::new(),
        ..config.clone()
    };
    match start(alone.clone()).await {
        Err(error @ ServerError::MustRejoin { .. }) => {
            let text = error.to_string();
            assert!(text.contains("--seed") && text.contains("rejoin"), "{text}");
        }
        Err(other) => panic!("expected MustRejoin, got {other}"),
        Ok(server) => {
            server.shutdown().await;
            panic!("founded a new cluster after its store was moved aside");
        }
    }
    assert!(marker.exists());

    // Rejoining through a live seed persists the view and removes the marker; after that a
    // restart without seeds restores the view.
    let seed_dir = tempfile::tempdir().unwrap();
    let seed = start(ServerConfig {
        node_id: Some("n0".into()),
        data_dir: seed_dir.path().to_path_buf(),
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        peer_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..ServerConfig::default()
    })
    .await
    .unwrap();
    let rejoined = start(ServerConfig {
        seeds: vec![seed.peer_address.to_string()],
        ..config
    })
    .await
    .unwrap();
    assert!(!marker.exists());
    rejoined.shutdown().await;
    seed.shutdown().await;
    let restarted = start(alone).await.unwrap();
    restarted.shutdown().await;
}

#[test]
fn deploy_systemd_sample_config_parses() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/systemd/ringkv.toml");
    let config = ServerConfig::from_file(&path).unwrap();
    assert_eq!(config.data_dir, Path::new("/var/lib/ringkv"));
    assert_eq!(config.advertise.as_deref(), Some("10.0.0.1:8087"));
    config.node_config(&NodeId::new("n"), 1).unwrap();
    // Every key is there, set or commented out with its default.
    let text = std::fs::read_to_string(&path).unwrap();
    let defaults = toml::Table::try_from(ServerConfig::default()).unwrap();
    let optional = [
        "node_id",
        "zone",
        "seeds",
        "tls_cert",
        "tls_key",
        "peer_tls_cert",
        "peer_tls_key",
        "peer_tls_ca",
        "cluster_secret_file",
        "ui_dir",
    ];
    for key in defaults.keys().map(String::as_str).chain(optional) {
        let shown = text.lines().any(|line| {
            let line = line.trim_start_matches('#').trim_start();
            line.starts_with(&format!("{key} =")) || line == format!("[{key}]")
        });
        assert!(shown, "{key} is not in {}", path.display());
    }
}
