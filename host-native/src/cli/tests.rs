use super::*;
use clap::Parser;
use ringkv_client::http::test_server::{answer, spawn};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    Get(GetArgs),
    Put(PutArgs),
    Delete(DeleteArgs),
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
}

fn parse(arguments: &[&str]) -> Result<Command, clap::Error> {
    Cli::try_parse_from(std::iter::once("ringkv").chain(arguments.iter().copied()))
        .map(|cli| cli.command)
}

#[test]
fn node_resolution() {
    let given = vec!["http://a:1,http://b:2".to_owned(), "http://c:3".to_owned()];
    assert_eq!(
        resolve_nodes_from(&given, Some("http://env:1")),
        ["http://a:1", "http://b:2", "http://c:3"]
    );
    assert_eq!(
        resolve_nodes_from(&[], Some(" http://e:1 , http://f:2")),
        ["http://e:1", "http://f:2"]
    );
    assert_eq!(resolve_nodes_from(&[], Some(" ")), [DEFAULT_NODE]);
    assert_eq!(resolve_nodes_from(&[], None), [DEFAULT_NODE]);
    let two = NodeArgs {
        nodes: vec!["http://a:1".into(), "http://b:1".into()],
        ..NodeArgs::default()
    };
    assert!(two.single().is_err());
    let one = NodeArgs {
        nodes: vec!["http://a:1".into()],
        ..NodeArgs::default()
    };
    assert_eq!(one.single().unwrap(), "http://a:1");
}

#[test]
fn zone_resolution() {
    assert_eq!(
        resolve_zone_from(Some("b"), Some("env")).as_deref(),
        Some("b")
    );
    assert_eq!(
        resolve_zone_from(None, Some(" env ")).as_deref(),
        Some("env")
    );
    assert_eq!(resolve_zone_from(None, None), None);
    // An empty flag turns off a zone the environment sets.
    assert_eq!(resolve_zone_from(Some(""), Some("env")), None);
    assert_eq!(resolve_zone_from(None, Some(" ")), None);
    let Command::Get(get) = parse(&["get", "--zone", "dc2", "b", "k"]).unwrap() else {
        panic!("not a get");
    };
    assert_eq!(get.node.zone.as_deref(), Some("dc2"));
}

#[test]
fn arguments() {
    let Command::Get(get) = parse(&[
        "get",
        "b",
        "k",
        "--node",
        "http://x:1,http://y:2",
        "--r",
        "all",
    ])
    .unwrap() else {
        panic!("not a get")
    };
    assert_eq!(get.bucket, "b");
    assert_eq!(get.node.nodes, ["http://x:1", "http://y:2"]);
    assert_eq!(get.request.r, Some(QuorumValue::All));
    let Command::Put(put) = parse(&["put", "b", "k", "v", "--context", "c", "--dw", "1"]).unwrap()
    else {
        panic!("not a put")
    };
    assert_eq!(put.value.as_deref(), Some(OsStr::new("v")));
    assert_eq!(put.request.dw, Some(QuorumValue::Count(1)));
    assert!(parse(&["put", "b", "k", "v", "--file", "f"]).is_err());
    let Command::Cluster {
        command: ClusterCommand::Join(join),
    } = parse(&["cluster", "join", "--node", "http://n:1", "10.0.0.1:9000"]).unwrap()
    else {
        panic!("not a join")
    };
    assert_eq!(join.seed, "10.0.0.1:9000");
    assert!(matches!(
        parse(&["cluster", "remove", "n3"]).unwrap(),
        Command::Cluster { command: ClusterCommand::Remove(ClusterRemoveArgs { ref node_id, .. }) } if node_id == "n3"
    ));
    assert!(parse(&["delete", "b"]).is_err());
}

fn got(values: &[&[u8]], context: Option<&str>) -> GetResult {
    GetResult {
        values: values.iter().map(|v| Bytes::copy_from_slice(v)).collect(),
        context: context.map(str::to_owned),
        read_your_writes: true,
        ..GetResult::default()
    }
}

fn render(result: &GetResult, raw: bool) -> (Vec<u8>, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    write_get(result, raw, &mut out, &mut err).unwrap();
    (out, String::from_utf8(err).unwrap())
}

#[test]
fn get_output() {
    // Piped: the raw bytes alone on stdout.
    let binary: &[u8] = &[0, 1, 0xff, b'\n'];
    let (out, err) = render(&got(&[binary], Some("CTX")), true);
    assert_eq!(out, binary);
    assert_eq!(err, "context: CTX\n");

    // Terminal: text with a newline; binary as a preview.
    let (out, _) = render(&got(&[b"milk"], Some("CTX")), false);
    assert_eq!(out, b"milk\n");
    let (out, _) = render(&got(&[binary], None), false);
    assert_eq!(String::from_utf8(out).unwrap(), "4 bytes: hex 0001ff0a\n");

    // Siblings, piped or not.
    for raw in [true, false] {
        let (out, err) = render(&got(&[b"milk,eggs", b"milk,bread\r\n"], Some("C2")), raw);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "2 siblings:\n  1) 9 bytes: \"milk,eggs\"\n  2) 12 bytes: hex 6d696c6b2c62726561640d0a\n"
        );
        assert!(err.starts_with("context: C2\n"), "{err}");
    }

    // A tombstone: nothing on stdout, the context on stderr.
    let (out, err) = render(&got(&[], Some("T")), true);
    assert!(out.is_empty());
    assert!(
        err.contains("context: T") && err.contains("deleted"),
        "{err}"
    );

    let mut sloppy = got(&[b"v"], None);
    sloppy.read_your_writes = false;
    sloppy.fallbacks = vec!["n4".into()];
    let (_, err) = render(&sloppy, true);
    assert!(err.contains("n4") && err.contains("r + w <= n"), "{err}");
}

#[test]
fn previews() {
    assert_eq!(preview(b"abc"), "\"abc\"");
    assert_eq!(preview(b""), "\"\"");
    assert_eq!(preview(&[0xff, 0xad]), "hex ffad");
    let long = "é".repeat(40); // 80 bytes: the cut falls inside a character
    let shown = preview(long.as_bytes());
    assert!(shown.ends_with('…') && shown.starts_with("\"éé"), "{shown}");
    let long_binary = vec![0u8; 100];
    assert_eq!(preview(&long_binary), format!("hex {}…", "00".repeat(64)));
}

#[test]
fn write_descriptions() {
    let result = PutResult {
        context: Some("NEW".into()),
        replicas: vec!["n1".into(), "n2".into(), "n4".into()],
        durable: vec!["n1".into()],
        fallbacks: vec!["n4".into()],
        node: Some("n1".into()),
        dot: Some("n1.1:7".into()),
        endpoint: String::new(),
    };
    let text = describe_write("stored 3 bytes", &result);
    assert_eq!(
        text,
        "stored 3 bytes: acknowledged by 3 replicas (n1, n2, n4), coordinated by n1\n\
         durable on: n1\n\
         fallbacks: n4 (standing in for unreachable owners; they hold hints)\n\
         context: NEW\n"
    );
}

#[tokio::test]
async fn put_value_sources() {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), b"from\r\nfile\0").unwrap();
    let path = file.path().to_path_buf();
    assert_eq!(
        read_value(None, Some(&path)).await.unwrap(),
        Bytes::from_static(b"from\r\nfile\0")
    );
    assert_eq!(
        read_value(Some(OsStr::new("arg")), None).await.unwrap(),
        Bytes::from_static(b"arg")
    );
    let missing = PathBuf::from("/nonexistent/ringkv/value");
    assert!(read_value(None, Some(&missing)).await.is_err());
}

fn member(id: &str, address: &str, alive: bool, status: &str) -> api::MemberDoc {
    api::MemberDoc {
        id: id.into(),
        status: status.into(),
        alive,
        zone: (id == "n1").then(|| "zone-a".to_owned()),
        capacity: 1,
        peer_addr: String::new(),
        http_addr: address.into(),
        partitions: 128,
        handoff_partitions: Some(0),
        drained: false,
    }
}

fn status_of(
    node: &str,
    members: Vec<api::MemberDoc>,
    hints: u64,
    moving: u32,
) -> api::ClusterStatus {
    api::ClusterStatus {
        cluster: "test".into(),
        node: node.into(),
        claimant: Some("n1".into()),
        ring_version: Some(4),
        members,
        hints_pending: hints,
        transfers_pending: moving,
        in_flight: 0,
        buckets: Vec::new(),
        merkle_roots: Default::default(),
    }
}

#[tokio::test]
async fn cluster_status_asks_every_member() {
    let (second, _) = spawn(|_| {
        let doc = status_of("n2", Vec::new(), 17, 3);
        answer(200, &[], &serde_json::to_vec(&doc).unwrap())
    })
    .await;
    let dead = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap().to_string()
    };
    let second_address = second.trim_start_matches("http://").to_owned();
    let (first, _) = spawn(move |_| {
        let members = vec![
            member("n1", "0.0.0.0:1", true, "up"),
            member("n2", &second_address, true, "up"),
            member("n3", &dead, false, "down"),
            member("n9", "", false, "removed"),
        ];
        let doc = status_of("n1", members, 5, 0);
        answer(200, &[], &serde_json::to_vec(&doc).unwrap())
    })
    .await;
    let text = cluster_status_text(&NodeArgs {
        nodes: vec![first],
        ..NodeArgs::default()
    })
    .await
    .unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "cluster test, ring version 4, claimant n1 (as seen by n1)"
    );
    let cells = |id: &str| -> Vec<String> {
        lines
            .iter()
            .find(|line| line.starts_with(id))
            .unwrap()
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(
        cells("NODE")[..8],
        [
            "NODE",
            "STATUS",
            "ALIVE",
            "ZONE",
            "CAPACITY",
            "PARTITIONS",
            "HINTS",
            "TRANSFERS"
        ]
    );
    assert_eq!(
        cells("n1*")[..8],
        ["n1*", "up", "yes", "zone-a", "1", "128", "5", "0"]
    );
    assert_eq!(
        cells("n2")[..8],
        ["n2", "up", "yes", "-", "1", "128", "17", "3"]
    );
    assert_eq!(
        cells("n3")[..8],
        ["n3", "down", "no", "-", "1", "128", "?", "?"]
    );
    assert_eq!(
        cells("n9")[..8],
        ["n9", "removed", "no", "-", "1", "128", "-", "-"]
    );
    // The columns are aligned: every row's HINTS cell starts at the same offset.
    let offset = lines[1].find("HINTS").unwrap();
    assert_eq!(&lines[3][offset..offset + 2], "17");
}

#[tokio::test]
async fn quorum_failure_is_an_error_with_the_server_message() {
    let (url, _) = spawn(|_| {
        answer(
            503,
            &[],
            br#"{"error":"write quorum not met","kind":"unavailable","quorum":"write","needed":2,"answered":["n1"]}"#,
        )
    })
    .await;
    let args = DeleteArgs {
        bucket: "b".into(),
        key: "k".into(),
        context: None,
        if_match: None,
        node: NodeArgs {
            nodes: vec![url],
            ..NodeArgs::default()
        },
        request: RequestArgs::default(),
        output: OutputArgs::default(),
    };
    let error = run_delete(args).await.unwrap_err().to_string();
    assert!(
        error.contains("write quorum not met") && error.contains("needed 2"),
        "{error}"
    );
}

#[test]
fn output_flag_parses_on_data_commands() {
    let Command::Get(get) = parse(&["get", "b", "k", "--output", "json"]).unwrap() else {
        panic!("not a get")
    };
    assert!(get.output.json());
    let Command::Put(put) = parse(&["put", "b", "k", "v", "-o", "json"]).unwrap() else {
        panic!("not a put")
    };
    assert!(put.output.json());
    let Command::Cluster {
        command: ClusterCommand::Status(status),
    } = parse(&["cluster", "status"]).unwrap()
    else {
        panic!("not a status")
    };
    assert_eq!(status.output.output, OutputFormat::Text);
    assert!(parse(&["get", "b", "k", "--output", "yaml"]).is_err());
}

#[test]
fn json_documents_write_text_as_text_and_other_bytes_as_base64() {
    let read = GetResult {
        values: vec![
            Bytes::from_static(b"caf\xc3\xa9"),
            Bytes::from_static(&[0xff, 0]),
        ],
        context: Some("Y3R4".into()),
        replicas: vec!["n1".into(), "n2".into()],
        node: Some("n1".into()),
        read_your_writes: true,
        expires_at: Some(1_000),
        ..GetResult::default()
    };
    let document = serde_json::to_value(output::ReadDoc::new(b"b", &[0x80], &read)).unwrap();
    assert_eq!(
        document,
        serde_json::json!({
            "bucket": "b",
            "key": {"base64": "gA=="},
            "found": true,
            "values": ["café", {"base64": "/wA="}],
            "context": "Y3R4",
            "expires_at": 1000,
            "replicas": ["n1", "n2"],
            "fallbacks": [],
            "node": "n1",
            "read_your_writes": true,
        })
    );
    let unchanged = serde_json::to_value(output::ReadDoc::unchanged(b"b", b"k", None)).unwrap();
    assert_eq!(unchanged["changed"], false);
    assert_eq!(unchanged["values"], serde_json::json!([]));
    let write = PutResult {
        context: Some("Y3R4".into()),
        replicas: vec!["n1".into()],
        durable: vec!["n1".into()],
        ..PutResult::default()
    };
    let document =
        serde_json::to_value(output::WriteDoc::new("put", b"b", b"k", Some(3), &write)).unwrap();
    assert_eq!(
        document,
        serde_json::json!({
            "bucket": "b",
            "key": "k",
            "operation": "put",
            "bytes": 3,
            "replicas": ["n1"],
            "durable": ["n1"],
            "fallbacks": [],
            "node": null,
            "context": "Y3R4",
        })
    );
}
