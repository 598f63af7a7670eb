//! The launcher on a secured broker (scripts/kafka-secure.sh): over SASL_SSL (SCRAM-SHA-512)
//! and over mTLS, each role with only the ACLs docs/SECURITY.md gives it. Refused
//! credentials, untrusted certificates and missing ACLs end in one sentence and exit 5,
//! and a planted secret shows in no output.
//!
//! Needs KAFKA_SECURE_BOOTSTRAP_SASL, KAFKA_SECURE_BOOTSTRAP_MTLS and KAFKA_SECURE_DIR
//! (scripts/test.sh starts the broker and sets them) and the `transformer-launcher` binary
//! that `cargo test --workspace` builds.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use competing_transformers_kafka::{admin, KafkaLogConfig};

/// The exit code of a refused credential or a denied ACL (docs/DESIGN.md).
const EXIT_ACCESS: i32 = 5;
/// Longest any refused command may take: refusals are never retried for long.
const REFUSAL_SECS_MAX: u64 = 60;

/// The two secured listeners.
#[derive(Clone, Copy, Debug)]
enum Listener {
    Sasl,
    Mtls,
}

const LISTENERS: [Listener; 2] = [Listener::Sasl, Listener::Mtls];

fn required(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: start the secured broker with `eval \"export $(scripts/kafka-secure.sh start)\"` (scripts/test.sh does)")
    })
}

fn secure_dir() -> PathBuf {
    PathBuf::from(required("KAFKA_SECURE_DIR"))
}

fn bootstrap(listener: Listener) -> String {
    match listener {
        Listener::Sasl => required("KAFKA_SECURE_BOOTSTRAP_SASL"),
        Listener::Mtls => required("KAFKA_SECURE_BOOTSTRAP_MTLS"),
    }
}

fn password(principal: &str) -> String {
    std::fs::read_to_string(secure_dir().join(format!("{principal}.password"))).unwrap().trim().to_string()
}

/// The client properties of `principal` on `listener`, without the password (it goes in
/// KAFKA_PROPERTY_SASL_PASSWORD). `certificate` names the mTLS key pair (the principal's own,
/// or `rogue`'s); `ca` the CA the client trusts.
fn properties(listener: Listener, principal: &str, certificate: &str, ca: &str) -> BTreeMap<String, String> {
    let dir = secure_dir();
    let file = |name: String| dir.join(name).display().to_string();
    let mut properties = BTreeMap::from([("ssl.ca.location".to_string(), file(format!("{ca}.pem")))]);
    match listener {
        Listener::Sasl => {
            properties.insert("security.protocol".into(), "SASL_SSL".into());
            properties.insert("sasl.mechanism".into(), "SCRAM-SHA-512".into());
            properties.insert("sasl.username".into(), principal.into());
        }
        Listener::Mtls => {
            properties.insert("security.protocol".into(), "SSL".into());
            properties.insert("ssl.certificate.location".into(), file(format!("{certificate}.pem")));
            properties.insert("ssl.key.location".into(), file(format!("{certificate}.key")));
        }
    }
    properties
}

/// The log config of `principal` as the library takes it.
fn log_config(listener: Listener, principal: &str, topic: &str) -> KafkaLogConfig {
    let mut config = KafkaLogConfig::new(bootstrap(listener), topic);
    config.client_properties = properties(listener, principal, principal, "ca");
    if matches!(listener, Listener::Sasl) {
        config.client_properties.insert("sasl.password".into(), password(principal));
    }
    config
}

/// A topic the role ACLs cover (prefix `sec-`), made by the admin.
async fn fresh_topic(test: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let topic = format!("sec-{test}-{nanos}");
    admin::create_topic(&log_config(Listener::Mtls, "admin", &topic)).await.unwrap();
    topic
}

/// How a launcher command is run: as whom, over which listener, with which password.
struct Client {
    listener: Listener,
    principal: String,
    certificate: String,
    ca: String,
    password: Option<String>,
}

impl Client {
    fn new(listener: Listener, principal: &str) -> Self {
        let password = matches!(listener, Listener::Sasl).then(|| password(principal));
        Client { listener, principal: principal.into(), certificate: principal.into(), ca: "ca".into(), password }
    }

    /// Writes the properties file (no secret in it) into `dir` and returns the command.
    fn command(&self, dir: &Path, args: &[&str]) -> Command {
        let file = dir.join(format!("{}-{:?}.properties", self.principal, self.listener));
        let lines: String = properties(self.listener, &self.principal, &self.certificate, &self.ca)
            .iter()
            .map(|(key, value)| format!("{key}={value}\n"))
            .collect();
        std::fs::write(&file, lines).unwrap();
        let mut command = Command::new(integration_tests::launcher_binary());
        command
            .args(args)
            .env("KAFKA_BOOTSTRAP", bootstrap(self.listener))
            .env("KAFKA_PROPERTIES_FILE", &file)
            .env_remove("TRANSFORMER_LAUNCHER_CONFIG")
            .env_remove("KAFKA_TOPIC")
            .stdin(Stdio::null());
        if let Some(password) = &self.password {
            command.env("KAFKA_PROPERTY_SASL_PASSWORD", password);
        }
        command
    }

    /// Runs `args` to the end, with `input` on stdin.
    fn run(&self, dir: &Path, args: &[&str], input: &str) -> Output {
        let mut child = self
            .command(dir, args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write as _;
        // A command that does not read stdin (`--help`, a refusal) may be gone already.
        let _ = child.stdin.take().unwrap().write_all(input.as_bytes());
        child.wait_with_output().unwrap()
    }
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ct-secured-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Asserts `output` succeeded, with its text in the message.
fn assert_ok(output: &Output, what: &str) {
    assert!(output.status.success(), "{what} failed ({:?}):\n{}", output.status, text(output));
}

/// Asserts a refusal: exit 5, one `error:` sentence with `expected` in it, never "does not exist".
fn assert_refused(output: &Output, expected: &str, what: &str) {
    let all = text(output);
    assert_eq!(output.status.code(), Some(EXIT_ACCESS), "{what}: expected exit 5:\n{all}");
    let errors: Vec<&str> = all.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "{what}: one error sentence:\n{all}");
    assert!(errors[0].contains(expected), "{what}: expected `{expected}`:\n{all}");
    assert!(!all.contains("does not exist"), "{what}: a denial is not a missing topic:\n{all}");
}

const ORDERS: &str = r#"{"type":"limit","order_id":"s1","account":"alice","side":"sell","price":101,"quantity":5}
{"type":"limit","order_id":"b1","account":"bob","side":"buy","price":101,"quantity":3}
"#;

/// Replicas race (as `replica`), a source publishes and redrives, a sink tails and reads the
/// status, the exporter exports: each over both listeners with only its role's ACLs.
#[tokio::test(flavor = "multi_thread")]
async fn every_role_works_with_only_its_acls_over_sasl_and_mtls() {
    let dir = scratch("roles");
    for listener in LISTENERS {
        let topic = fresh_topic("roles").await;
        let source = Client::new(listener, "source");
        let published = source.run(&dir, &["publish", "--topic", &topic, "--key", "orders"], ORDERS);
        assert_ok(&published, &format!("publish as source over {listener:?}"));

        let config = dir.join(format!("launcher-{listener:?}.toml"));
        std::fs::write(
            &config,
            format!("[kafka]\ntopic = \"{topic}\"\n\n[[transformer]]\nname = \"matching-engine\"\nreplicas = 2\n"),
        )
        .unwrap();
        let replica = Client::new(listener, "replica");
        let run = replica
            .command(&dir, &["run", "--config", config.to_str().unwrap(), "--replica-id", "sec"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let sink = Client::new(listener, "sink");
        let deadline = Instant::now() + Duration::from_secs(90);
        let outputs = loop {
            let tail = sink.run(&dir, &["tail", "matching-engine", "--topic", &topic], "");
            assert_ok(&tail, &format!("tail as sink over {listener:?}"));
            let lines = String::from_utf8_lossy(&tail.stdout).lines().count();
            if lines >= 3 || Instant::now() > deadline {
                break lines;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        Command::new("kill").args(["-TERM", &run.id().to_string()]).status().unwrap();
        let ran = run.wait_with_output().unwrap();
        assert!(outputs >= 3, "the replicas wrote {outputs} output(s) over {listener:?}:\n{}", text(&ran));
        assert_ok(&ran, &format!("run as replica over {listener:?}"));

        let status = sink.run(&dir, &["status", "--topic", &topic], "");
        assert_ok(&status, &format!("status as sink over {listener:?}"));
        assert!(!text(&status).contains("ERROR"), "status logs no error:\n{}", text(&status));

        let target = format!("sec-exported-{}", &topic["sec-".len()..]);
        let exporter = Client::new(listener, "exporter");
        let exported =
            exporter.run(&dir, &["export", "--topic", &topic, "--keys", "orders,matching-engine", "--to", &target], "");
        assert_ok(&exported, &format!("export as exporter over {listener:?}"));

        let redrive = source.run(
            &dir,
            &["dead-letters", "redrive", "--topic", &topic, "--transformer", "matching-engine", "--all"],
            "",
        );
        assert_ok(&redrive, &format!("redrive as source over {listener:?}"));
        let doctor = replica.run(&dir, &["doctor", "--topic", &topic], "");
        assert_ok(&doctor, &format!("doctor as replica over {listener:?}"));
        for check in ["reachable: ok", "authenticated: ok", "topic readable: ok", "topic writable: ok"] {
            assert!(String::from_utf8_lossy(&doctor.stdout).contains(check), "{check}:\n{}", text(&doctor));
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// A wrong password, certificates either side does not trust, a principal with no rights and
/// a reader that writes: each one sentence naming what is wrong, exit 5, within a minute.
#[tokio::test(flavor = "multi_thread")]
async fn refusals_are_one_sentence_and_exit_5() {
    let dir = scratch("refusals");
    let topic = fresh_topic("refusals").await;
    let timed = |client: &Client, args: &[&str], input: &str| {
        let started = Instant::now();
        let output = client.run(&dir, args, input);
        assert!(started.elapsed() < Duration::from_secs(REFUSAL_SECS_MAX), "{args:?} took {:?}", started.elapsed());
        output
    };
    let mut wrong = Client::new(Listener::Sasl, "source");
    wrong.password = Some("not-the-password".into());
    let output = timed(&wrong, &["publish", "--topic", &topic, "--key", "orders"], ORDERS);
    assert_refused(&output, "refused this client's credentials", "a wrong password");

    let mut rogue = Client::new(Listener::Mtls, "sink");
    rogue.certificate = "rogue".into();
    let output = timed(&rogue, &["tail", "orders", "--topic", &topic], "");
    assert_refused(&output, "TLS handshake", "an untrusted client certificate");

    let mut untrusting = Client::new(Listener::Mtls, "sink");
    untrusting.ca = "rogue-ca".into();
    let output = timed(&untrusting, &["status", "--topic", &topic], "");
    assert_refused(&output, "TLS handshake", "an untrusted broker certificate");

    for listener in LISTENERS {
        let nobody = Client::new(listener, "nobody");
        for args in [vec!["tail", "orders", "--topic", &topic], vec!["publish", "--topic", &topic, "--key", "orders"]] {
            let output = timed(&nobody, &args, ORDERS);
            assert_refused(&output, "an ACL on the topic", &format!("{args:?} with no rights over {listener:?}"));
        }
        let sink = Client::new(listener, "sink");
        let output = timed(&sink, &["publish", "--topic", &topic, "--key", "orders"], ORDERS);
        assert_refused(&output, "denied this client", &format!("publish as a sink over {listener:?}"));
        let source = Client::new(listener, "source");
        let output = timed(&source, &["topics", "check", "--topic", &topic], "");
        assert_refused(&output, "DescribeConfigs", &format!("topics check as a source over {listener:?}"));
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// A secret planted as the password, in a JAAS property, in a config file's bad line and as
/// a signing key (environment and file) shows in no output of any command, failing or not,
/// nor in `--help`.
#[tokio::test(flavor = "multi_thread")]
async fn a_planted_secret_shows_in_no_output() {
    const SECRET: &str = "planted-Secret-7f3a9c";
    let dir = scratch("secret");
    let topic = fresh_topic("secret").await;
    let mut planted = Client::new(Listener::Sasl, "source");
    planted.password = Some(SECRET.into());
    let jaas = dir.join("jaas.toml");
    std::fs::write(
        &jaas,
        format!("[kafka]\ntopic = \"{topic}\"\n[kafka.properties]\n\"sasl.jaas.config\" = \"ScramLoginModule required password=\\\"{SECRET}\\\";\"\n"),
    )
    .unwrap();
    let broken = dir.join("broken.toml");
    std::fs::write(&broken, format!("[kafka.properties]\n\"sasl.password\" = {SECRET}\n")).unwrap();
    let (jaas, broken) = (jaas.to_str().unwrap(), broken.to_str().unwrap());
    let commands: Vec<Vec<&str>> = vec![
        vec!["--help"],
        vec!["publish", "--help"],
        vec!["doctor", "--help"],
        vec!["publish", "--topic", &topic, "--key", "orders"],
        vec!["tail", "orders", "--topic", &topic],
        vec!["doctor", "--topic", &topic],
        vec!["status", "--config", jaas],
        vec!["tail", "orders", "--config", jaas],
        vec!["status", "--config", broken, "--topic", &topic],
    ];
    for args in commands {
        let output = planted.run(&dir, &args, ORDERS);
        let all = text(&output);
        assert!(!all.contains(SECRET), "{args:?} shows the secret:\n{all}");
        if args.len() > 2 {
            assert!(!output.status.success(), "{args:?} should fail:\n{all}");
        }
    }
    // A signing key that does not read, from the environment and from a file.
    let key_file = dir.join("signing.key");
    std::fs::write(&key_file, SECRET).unwrap();
    let key_file = key_file.to_str().unwrap();
    let signing: Vec<Vec<&str>> = vec![
        vec!["--help"],
        vec!["run", "--help"],
        vec!["publish", "--topic", &topic, "--key", "orders"],
        vec!["publish", "--topic", &topic, "--key", "orders", "--signing-key-file", key_file],
    ];
    for args in signing {
        let output = planted.command(&dir, &args).env("TRANSFORMER_SIGNING_KEY", SECRET).output().unwrap();
        let all = text(&output);
        assert!(!all.contains(SECRET), "{args:?} with a planted signing key shows it:\n{all}");
        if args.len() > 2 {
            assert!(!output.status.success(), "{args:?} should fail:\n{all}");
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// The ledger's replicas run as `replica`, and its PostgreSQL projection reads as `sink`,
/// over both listeners: the projected balances are the opened ones, moved by the transfer.
#[tokio::test(flavor = "multi_thread")]
async fn the_ledger_projection_reads_as_a_sink_over_sasl_and_mtls() {
    let database_url = std::env::var("DATABASE_URL").unwrap_or_else(|_| {
        panic!("DATABASE_URL is not set: `scripts/postgres.sh start` prints it (scripts/test.sh sets it)")
    });
    let dir = scratch("ledger");
    let commands = concat!(
        r#"{"type":"open","account":"alice","initial":100}"#,
        "\n",
        r#"{"type":"open","account":"bob","initial":50}"#,
        "\n",
        r#"{"type":"transfer","id":"t1","from":"alice","to":"bob","amount":30}"#,
        "\n"
    );
    for listener in LISTENERS {
        let topic = fresh_topic("ledger").await;
        let source = Client::new(listener, "source");
        let published = source.run(&dir, &["publish", "--topic", &topic, "--key", ledger::TRANSFERS_KEY], commands);
        assert_ok(&published, &format!("publish transfers over {listener:?}"));
        let config = dir.join(format!("ledger-{listener:?}.toml"));
        std::fs::write(&config, format!("[kafka]\ntopic = \"{topic}\"\n\n[[transformer]]\nname = \"ledger\"\n"))
            .unwrap();
        let run = Client::new(listener, "replica")
            .command(&dir, &["run", "--config", config.to_str().unwrap(), "--replica-id", "sec"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = std::sync::Arc::new(
            competing_transformers_kafka::KafkaLog::connect(log_config(listener, "sink", &topic)).await.unwrap(),
        );
        let schema = format!("sec_{}", topic.rsplit('-').next().unwrap());
        let mut projection = ledger_projection::Projection::connect(&database_url, &schema, &topic).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(90);
        let want = BTreeMap::from([("alice".to_string(), 70), ("bob".to_string(), 80)]);
        let balances = loop {
            projection.run(log.clone(), ledger_projection::RunOptions::default()).await.unwrap();
            let balances = projection.balances().await.unwrap();
            if balances == want || Instant::now() > deadline {
                break balances;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        Command::new("kill").args(["-TERM", &run.id().to_string()]).status().unwrap();
        let ran = run.wait_with_output().unwrap();
        assert_eq!(balances, want, "over {listener:?}:\n{}", text(&ran));
        assert_ok(&ran, &format!("run ledger as replica over {listener:?}"));
    }
    std::fs::remove_dir_all(&dir).ok();
}
