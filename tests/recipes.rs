//! The recipes of `contrib/` (issue 13, "Recipes for the fleet"), checked
//! here without the systems they are written for: CI has no systemd as PID 1,
//! no Docker engine and no cluster. What can be checked is:
//!
//! - systemd: `systemd-analyze verify` accepts both units, with not even a
//!   warning; the service's stop timeout covers the config's graceful
//!   timeout; the config it names passes `prefork check`; and that config,
//!   started the way the socket unit starts it (`systemd-socket-activate`),
//!   serves on the socket it is handed.
//! - Docker: the Dockerfile's stages, entry point and copies agree with each
//!   other, with what the build produces and with `app.toml`; that file passes
//!   `prefork check`; its HEALTHCHECK, run as written against that config,
//!   passes while workers live and fails before and after.
//! - Kubernetes: the manifest parses as YAML, its probes, preStop and grace
//!   period hold what the issue asks, its ports and paths agree with the
//!   ConfigMap's config and with the image, and that config passes
//!   `prefork check`.
//!
//! Paths of the installed system are replaced by the build under test where
//! a check needs the file to exist: `/usr/local/bin/prefork` by
//! `CARGO_BIN_EXE_prefork` (verify checks that ExecStart's program exists),
//! `/usr/local/bin/http_worker` by the example cargo built beside it, and a
//! config's `scoreboard_dir` by the test's own directory.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use nix::sys::signal::Signal;
use serde_json::Value;

use crate::harness::{eventually, rust_example, Running, Sandbox};
use crate::httpload::get;
use crate::util::fork_lock;

const PREFORK: &str = env!("CARGO_BIN_EXE_prefork");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// Where the recipes install prefork.
const INSTALLED_PREFORK: &str = "/usr/local/bin/prefork";
/// Where they install the example worker they run.
const INSTALLED_WORKER: &str = "/usr/local/bin/http_worker";

// ---------------------------------------------------------------------------
// systemd

#[test]
fn systemd_units_pass_systemd_analyze_verify() {
    let sandbox = Sandbox::new();
    let units = installed_units(&sandbox);
    let out = verify(&units);
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "systemd-analyze verify on contrib/systemd/ ({}; ExecStart's {INSTALLED_PREFORK} \
         replaced by {PREFORK}; /bin/kill comes from Debian's procps):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The control: verify says so when a key is wrong, on this machine and
    // with these settings (a warning, and exit 0: hence the test of silence
    // above). Were its messages going elsewhere, silence would prove nothing.
    let service = &units[0];
    let text = std::fs::read_to_string(service).unwrap();
    std::fs::write(service, text.replace("KillMode=", "KillMod=")).unwrap();
    let out = verify(&units);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("KillMod"),
        "systemd-analyze verify did not report a misspelt key: {}\n{said}",
        out.status
    );
}

#[test]
fn systemd_service_has_what_issue_13_asks_and_agrees_with_its_config() {
    let unit = unit_settings("prefork@.service");
    let one = |key: &str| -> &str {
        match unit.get(key).map(Vec::as_slice) {
            Some([value]) => value,
            other => panic!("prefork@.service: {key}= should be set once: {other:?}"),
        }
    };
    // What issue 13 asks of the unit.
    assert_eq!(one("Type"), "notify");
    assert_eq!(one("NotifyAccess"), "main");
    assert_eq!(one("KillMode"), "mixed");
    assert_eq!(
        one("ExecStart"),
        format!("{INSTALLED_PREFORK} -c /etc/prefork/%i.toml")
    );
    assert!(
        unit["ExecReload"]
            .iter()
            .any(|line| line == "/bin/kill -HUP $MAINPID"),
        "{:?}",
        unit["ExecReload"]
    );
    for key in ["WatchdogSec", "LimitNOFILE", "Restart"] {
        one(key);
    }
    // The config of instance `app`: its board in the instance's runtime
    // directory, and its graceful timeout within the unit's stop timeout.
    let config = read_toml("contrib/systemd/app.toml");
    let runtime = format!("/run/{}/", one("RuntimeDirectory").replace("%i", "app"));
    let board = config["scoreboard_dir"].as_str().expect("scoreboard_dir");
    assert!(
        board.starts_with(&runtime),
        "contrib/systemd/app.toml: scoreboard_dir {board} is not under {runtime}"
    );
    let graceful = seconds(config["graceful_timeout"].as_str().unwrap());
    let stop = seconds(one("TimeoutStopSec"));
    assert!(
        stop > graceful,
        "TimeoutStopSec={stop}s does not leave prefork its graceful_timeout of {graceful}s"
    );
}

#[test]
fn systemd_app_toml_passes_prefork_check() {
    let config = read_toml("contrib/systemd/app.toml");
    command_of(&config, "contrib/systemd/app.toml");
    // The file as it is, but for the installed worker's path.
    let out = check(Path::new(ROOT).join("contrib/systemd/app.toml"));
    assert!(
        out.status.success(),
        "prefork check -c contrib/systemd/app.toml: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn systemd_app_toml_serves_on_the_socket_of_socket_activation() {
    let sandbox = Sandbox::new();
    assert!(
        !read_toml("contrib/systemd/app.toml").contains_key("listen"),
        "contrib/systemd/app.toml sets `listen`: its workers should take the socket unit's sockets"
    );
    let config = local_copy(&sandbox, "contrib/systemd/app.toml");
    let workers = config.workers;
    // A free port, bound by systemd-socket-activate as prefork@.socket's
    // ListenStream= would be; the file has no `listen` of its own.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut cmd = Command::new(tool("systemd-socket-activate", "systemd"));
    cmd.args(["-l", &addr.to_string(), PREFORK, "-c"])
        .arg(&config.path)
        .args(["--", &rust_example("http_worker")]);
    let mut master = Running::start(&mut cmd);
    // systemd-socket-activate starts prefork on the first connection, as
    // the socket unit does.
    let mut answer = None;
    let answered = eventually(|| {
        answer = get(addr, "/").ok();
        answer.is_some()
    });
    assert!(
        answered,
        "{}",
        master.report(&format!("no answer on {addr}"))
    );
    let answer = answer.unwrap();
    assert_eq!(answer.status, 200, "{}", master.report("GET /"));
    assert_eq!(answer.version.as_deref(), Some("1"), "APP_VERSION of [env]");
    master.wait_workers(workers);
    assert!(
        master.stderr().contains("inherited from socket activation"),
        "{}",
        master.report("the socket was not the one handed down")
    );
    master.signal(Signal::SIGTERM);
    let exit = master.wait_exit();
    assert!(exit.success(), "{}", master.report(&format!("{exit:?}")));
}

// ---------------------------------------------------------------------------
// Docker

#[test]
fn dockerfile_agrees_with_the_build_and_its_config() {
    let docker = Dockerfile::read();
    let stages: Vec<&String> = docker.all("FROM").collect();
    assert_eq!(stages.len(), 2, "a builder and a runtime stage: {stages:?}");
    assert!(
        stages[0].starts_with("rust:")
            && stages[0].contains("bookworm")
            && stages[0].ends_with(" AS build"),
        "the builder: {}",
        stages[0]
    );
    assert_eq!(stages[1], "debian:bookworm-slim");
    let build = docker
        .all("RUN")
        .find(|run| run.contains("cargo build"))
        .expect("a RUN with cargo build");
    for flag in ["--release", "--bins", "--examples"] {
        assert!(build.contains(flag), "{build}: no {flag}");
    }
    // The entry point, exec form: prefork is PID 1 and gets the signals.
    let entry: Vec<String> = serde_json::from_str(docker.one("ENTRYPOINT"))
        .unwrap_or_else(|e| panic!("ENTRYPOINT is not in exec form (a JSON array): {e}"));
    assert_eq!(entry[..2], [INSTALLED_PREFORK, "-c"]);
    let config_path = &entry[2];
    // What is copied into the image: from the build, files cargo makes
    // (here where `cargo test` made them); from the context, files that
    // exist; and among them prefork, the worker and the config.
    let mut installed = Vec::new();
    for copy in docker.all("COPY") {
        let words: Vec<&str> = copy.split_whitespace().collect();
        let (from, source, dest) = match words[..] {
            ["--from=build", source, dest] => (true, source, dest),
            [source, dest] => (false, source, dest),
            _ => panic!("COPY {copy}: one source and a destination expected"),
        };
        if from {
            let built = source
                .strip_prefix("/src/target/release/")
                .unwrap_or_else(|| panic!("COPY {copy}: not from the release build"));
            let here = Path::new(PREFORK).parent().unwrap().join(built);
            assert!(
                here.exists(),
                "COPY {copy}: cargo makes no {built}: {} is missing",
                here.display()
            );
        } else if source != "." {
            assert!(
                Path::new(ROOT).join(source).exists(),
                "COPY {copy}: no such file"
            );
        }
        installed.push((source.to_string(), dest.to_string()));
    }
    let dest_of = |dest: &str| installed.iter().find(|(_, d)| d == dest);
    assert!(
        dest_of(INSTALLED_PREFORK).is_some(),
        "prefork is not copied"
    );
    assert_eq!(
        dest_of(config_path).map(|(s, _)| s.as_str()),
        Some("contrib/docker/app.toml"),
        "the ENTRYPOINT's config {config_path}"
    );
    let config = read_toml("contrib/docker/app.toml");
    let command = command_of(&config, "contrib/docker/app.toml");
    assert!(
        dest_of(&command).is_some(),
        "the worker {command} is not copied"
    );
    // Graceful shutdown, no root, a health check, and both ports exposed.
    assert_eq!(docker.one("STOPSIGNAL"), "SIGTERM");
    let user = docker.one("USER");
    let uid: u32 = user
        .split(':')
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("USER {user}: numeric, for runAsNonRoot"));
    assert_ne!(uid, 0, "USER {user}");
    assert!(docker.one("HEALTHCHECK").contains(" CMD "));
    let exposed: Vec<u16> = docker
        .one("EXPOSE")
        .split_whitespace()
        .map(|p| p.parse().expect("a port"))
        .collect();
    let listen = config["listen"].as_array().expect("listen");
    for addr in listen.iter().chain([&config["status_listen"]]) {
        let port = port_of(addr.as_str().expect("an address"));
        assert!(
            exposed.contains(&port),
            "port {port} is not in EXPOSE {exposed:?}"
        );
    }
}

#[test]
fn docker_app_toml_passes_prefork_check() {
    let out = check(Path::new(ROOT).join("contrib/docker/app.toml"));
    assert!(
        out.status.success(),
        "prefork check -c contrib/docker/app.toml: {}
{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn docker_healthcheck_passes_while_workers_live_and_fails_otherwise() {
    let sandbox = Sandbox::new();
    let config = local_copy(&sandbox, "contrib/docker/app.toml");
    // The HEALTHCHECK as the image's /bin/sh runs it, on this copy.
    let docker = Dockerfile::read();
    let healthcheck = docker.one("HEALTHCHECK");
    let (_, shell) = healthcheck.split_once(" CMD ").unwrap();
    let shell = shell
        .replace(INSTALLED_PREFORK, PREFORK)
        .replace("/etc/prefork/app.toml", config.path.to_str().unwrap());
    let health = || {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", &shell]).stdin(Stdio::null());
        run(&mut cmd)
    };
    let before = health();
    assert_eq!(
        before.status.code(),
        Some(1),
        "before prefork starts: {before:?}"
    );

    let mut cmd = Command::new(PREFORK);
    cmd.arg("-c")
        .arg(&config.path)
        // A port of the test's own (the command line's list replaces the
        // file's), and the worker where cargo built it.
        .args([
            "--listen",
            "127.0.0.1:0",
            "--",
            &rust_example("http_worker"),
        ]);
    let mut master = Running::start(&mut cmd);
    master.wait_workers(config.workers);
    let addr = master.listen_addr();
    let mut answer = None;
    let answered = eventually(|| {
        answer = get(addr, "/").ok().filter(|a| a.status == 200);
        answer.is_some()
    });
    assert!(answered, "{}", master.report(&format!("no 200 on {addr}")));
    let during = health();
    assert!(
        during.status.success(),
        "{}",
        master.report(&format!("HEALTHCHECK with live workers: {during:?}"))
    );

    master.signal(Signal::SIGTERM);
    let exit = master.wait_exit();
    assert!(exit.success(), "{}", master.report(&format!("{exit:?}")));
    let after = health();
    assert_eq!(
        after.status.code(),
        Some(1),
        "after prefork stopped: {after:?}"
    );
}

// ---------------------------------------------------------------------------
// Kubernetes

#[test]
fn kubernetes_manifest_holds_what_issue_13_asks() {
    let docs = yaml_documents("contrib/k8s/deployment.yaml");
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["ConfigMap", "Deployment", "Service"]);
    let (config_map, deployment, service) = (&docs[0], &docs[1], &docs[2]);

    let spec = &deployment["spec"]["template"]["spec"];
    let containers = spec["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1);
    let container = &containers[0];
    let port_named = |name: &str| -> u16 {
        let ports = container["ports"].as_array().expect("ports");
        let port = ports.iter().find(|p| p["name"] == name);
        let port = port.unwrap_or_else(|| panic!("no container port named {name}"));
        port["containerPort"].as_u64().unwrap().try_into().unwrap()
    };

    // The config: mounted where the image's ENTRYPOINT reads it.
    let data = config_map["data"]
        .as_object()
        .expect("the ConfigMap's data");
    assert_eq!(data.len(), 1, "one file in the ConfigMap");
    let (file, text) = data.iter().next().unwrap();
    let config: toml::Table = text
        .as_str()
        .unwrap()
        .parse()
        .expect("the ConfigMap's TOML");
    let entry: Vec<String> = serde_json::from_str(Dockerfile::read().one("ENTRYPOINT")).unwrap();
    let mounts = container["volumeMounts"].as_array().expect("volumeMounts");
    let volumes = spec["volumes"].as_array().expect("volumes");
    let volume_of = |mount: &Value| -> &Value {
        let found = volumes.iter().find(|v| v["name"] == mount["name"]);
        found.unwrap_or_else(|| panic!("no volume for the mount {mount}"))
    };
    let config_mount = mounts
        .iter()
        .find(|m| volume_of(m)["configMap"]["name"] == config_map["metadata"]["name"])
        .expect("the ConfigMap mounted");
    assert_eq!(
        format!("{}/{file}", config_mount["mountPath"].as_str().unwrap()),
        entry[2],
        "the ConfigMap's file is not the ENTRYPOINT's config"
    );
    // The board: on a writable volume (the root file system is read-only).
    let board = config["scoreboard_dir"].as_str().expect("scoreboard_dir");
    let board_mount = mounts.iter().find(|m| {
        let under = format!("{}/", m["mountPath"].as_str().unwrap());
        board.starts_with(&under) && volume_of(m).get("emptyDir").is_some()
    });
    assert!(
        board_mount.is_some(),
        "scoreboard_dir {board}: on no emptyDir"
    );
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);

    // Probes: liveness and readiness on prefork's /healthz.
    let status_port = port_of(config["status_listen"].as_str().expect("status_listen"));
    for probe in ["livenessProbe", "readinessProbe"] {
        let http_get = &container[probe]["httpGet"];
        assert_eq!(http_get["path"], "/healthz", "{probe}");
        let port = http_get["port"].as_str().expect("a named port");
        assert_eq!(port_named(port), status_port, "{probe}");
    }
    // preStop, and a grace period that covers it and graceful_timeout.
    let pre_stop = &container["lifecycle"]["preStop"];
    let sleep = match (&pre_stop["exec"]["command"], &pre_stop["sleep"]["seconds"]) {
        (Value::Array(argv), Value::Null) => {
            let words: Vec<&str> = argv.iter().map(|a| a.as_str().unwrap()).collect();
            assert!(words[0].ends_with("sleep"), "preStop: {words:?}");
            seconds(words[1])
        }
        (Value::Null, Value::Number(n)) => n.as_f64().unwrap(),
        _ => panic!("preStop: a sleep expected: {pre_stop}"),
    };
    let graceful = seconds(
        config["graceful_timeout"]
            .as_str()
            .expect("graceful_timeout"),
    );
    let grace = spec["terminationGracePeriodSeconds"]
        .as_f64()
        .expect("terminationGracePeriodSeconds");
    assert!(
        grace > sleep + graceful,
        "terminationGracePeriodSeconds {grace} <= preStop {sleep} + graceful_timeout {graceful}"
    );

    // Resources, the same user as the image, and the scrape of /metrics.
    for kind in ["requests", "limits"] {
        assert!(container["resources"][kind]["memory"].is_string(), "{kind}");
    }
    let image_uid = Dockerfile::read()
        .one("USER")
        .split(':')
        .next()
        .unwrap()
        .to_string();
    assert_eq!(spec["securityContext"]["runAsUser"].to_string(), image_uid);
    let annotations = &deployment["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/port"], status_port.to_string());
    assert_eq!(annotations["prometheus.io/path"], "/metrics");

    // The Service reaches the workers' socket.
    let listen = config["listen"].as_array().expect("listen");
    let http = port_of(listen[0].as_str().unwrap());
    let target = &service["spec"]["ports"][0]["targetPort"];
    assert_eq!(port_named(target.as_str().unwrap()), http);
    assert_eq!(
        service["spec"]["selector"],
        deployment["spec"]["selector"]["matchLabels"]
    );
}

#[test]
fn kubernetes_config_map_passes_prefork_check() {
    let sandbox = Sandbox::new();
    let docs = yaml_documents("contrib/k8s/deployment.yaml");
    let (_, text) = docs[0]["data"].as_object().unwrap().iter().next().unwrap();
    let path = sandbox.path().join("k8s-app.toml");
    std::fs::write(&path, text.as_str().unwrap()).unwrap();
    let out = check(checkable_file(&sandbox, &path));
    assert!(
        out.status.success(),
        "prefork check on the ConfigMap's app.toml: {}
{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------
// Helpers

/// Runs `cmd` to its end, its output captured. No other test forks
/// meanwhile: a child that kept a copy of our pipes would hold us up.
fn run(cmd: &mut Command) -> Output {
    let _forking = fork_lock();
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {cmd:?}: {e}"))
}

/// The path of `program` on `PATH`, or a failure that says which Debian
/// package installs it. Never a skip: CI installs it (`.ci/run`).
fn tool(program: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("{program} is not on PATH: install it (Debian: apt-get install {package})")
        })
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(relative))
        .unwrap_or_else(|e| panic!("read {relative}: {e}"))
}

fn read_toml(relative: &str) -> toml::Table {
    read(relative)
        .parse()
        .unwrap_or_else(|e| panic!("{relative}: {e}"))
}

/// The worker command of a recipe's config: the installed example worker.
fn command_of(config: &toml::Table, name: &str) -> String {
    let command = config["command"].as_array().expect("command");
    let program = command[0].as_str().unwrap().to_string();
    assert_eq!(
        program, INSTALLED_WORKER,
        "{name}: the worker the recipes install"
    );
    program
}

/// `prefork check -c FILE`, with the example worker where cargo built it.
fn check(file: PathBuf) -> Output {
    let mut cmd = Command::new(PREFORK);
    cmd.arg("check")
        .arg("-c")
        .arg(file)
        .args(["--", &rust_example("http_worker")]);
    run(&mut cmd)
}

/// A copy of a recipe's config, for the test to change.
fn checkable(sandbox: &Sandbox, relative: &str) -> PathBuf {
    checkable_file(sandbox, &Path::new(ROOT).join(relative))
}

fn checkable_file(sandbox: &Sandbox, path: &Path) -> PathBuf {
    let text = std::fs::read_to_string(path).unwrap();
    let table: toml::Table = text.parse().unwrap();
    let name = path.file_name().unwrap().to_string_lossy();
    let copy = sandbox.path().join(format!("checkable-{name}"));
    std::fs::write(&copy, toml::to_string(&table).unwrap()).unwrap();
    copy
}

/// A recipe's config made runnable by the test: checkable, with the board
/// in the sandbox.
struct LocalConfig {
    path: PathBuf,
    workers: usize,
}

fn local_copy(sandbox: &Sandbox, relative: &str) -> LocalConfig {
    let path = checkable(sandbox, relative);
    let mut table: toml::Table = std::fs::read_to_string(&path).unwrap().parse().unwrap();
    let board = sandbox.board().to_str().unwrap().to_string();
    table.insert("scoreboard_dir".into(), board.into());
    // On a port of the test's own.
    if table.contains_key("status_listen") {
        table.insert("status_listen".into(), "127.0.0.1:0".into());
    }
    std::fs::write(&path, toml::to_string(&table).unwrap()).unwrap();
    let workers = table["workers"].as_integer().expect("workers");
    LocalConfig {
        path,
        workers: workers.try_into().unwrap(),
    }
}

/// The port of `HOST:PORT`.
fn port_of(addr: &str) -> u16 {
    let (_, port) = addr.rsplit_once(':').expect("HOST:PORT");
    port.parse().unwrap_or_else(|_| panic!("{addr}: no port"))
}

/// A duration as prefork and systemd write them here (`30s`, `500ms`,
/// `1.5m`, `2min`, `1h`, or a number of seconds), in seconds.
fn seconds(text: &str) -> f64 {
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .unwrap_or_else(|_| panic!("{text:?}: not a duration"));
    let scale = match unit {
        "" | "s" => 1.0,
        "ms" => 0.001,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => panic!("{text:?}: not a duration this test reads"),
    };
    number * scale
}

/// The units of contrib/systemd/, copied into the sandbox with the binary
/// under test as the prefork they run: `[service, socket]`.
fn installed_units(sandbox: &Sandbox) -> [PathBuf; 2] {
    ["prefork@.service", "prefork@.socket"].map(|name| {
        let text = read(&format!("contrib/systemd/{name}"));
        let path = sandbox.path().join(name);
        std::fs::write(&path, text.replace(INSTALLED_PREFORK, PREFORK)).unwrap();
        path
    })
}

/// `systemd-analyze verify` on `units`, the way this test runs it outside
/// a systemd machine:
/// - `SYSTEMD_LOG_TARGET=console`: its messages on stderr, even where
///   `JOURNAL_STREAM` would send them to the journal;
/// - `SYSTEMD_LOG_LEVEL=warning`: what is wrong with a unit (an unknown key
///   or value is a warning), not the debugging of its loader;
/// - `--man=no`: `Documentation=man:` pages are not looked up (no man-db);
/// - `--recursive-errors=no`: only these units count, not the machine's
///   own units that they are ordered against (network.target, ...).
fn verify(units: &[PathBuf]) -> Output {
    let mut cmd = Command::new(tool("systemd-analyze", "systemd"));
    cmd.env("SYSTEMD_LOG_TARGET", "console")
        .env("SYSTEMD_LOG_LEVEL", "warning")
        .env("SYSTEMD_LOG_COLOR", "0")
        .args(["verify", "--man=no", "--recursive-errors=no"])
        .args(units);
    run(&mut cmd)
}

/// The settings of a unit of contrib/systemd/: every value of each key, in
/// order (sections merged: the keys of these units are unique to theirs).
fn unit_settings(name: &str) -> BTreeMap<String, Vec<String>> {
    let mut settings: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in read(&format!("contrib/systemd/{name}")).lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with(['#', ';', '[']) {
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("{name}: {line:?}"));
        settings
            .entry(key.trim().to_string())
            .or_default()
            .push(value.trim().to_string());
    }
    settings
}

/// The documents of a YAML file, as JSON values. Parsed by Python's yaml
/// (Debian's python3-yaml, a YAML 1.1 parser, as Kubernetes' is): the test
/// suite's dependencies stay Rust crates it already has, and `serde_yaml`,
/// the usual crate, is no longer maintained. Debian's own interpreter, where
/// that package installs: the `python3` on PATH may be another one (pyenv's).
const DEBIAN_PYTHON: &str = "/usr/bin/python3";

fn yaml_documents(relative: &str) -> Vec<Value> {
    let path = Path::new(ROOT).join(relative);
    let script = "import json, sys, yaml\n\
        with open(sys.argv[1]) as f:\n    docs = list(yaml.safe_load_all(f))\n\
        json.dump(docs, sys.stdout)\n";
    let mut cmd = Command::new(DEBIAN_PYTHON);
    cmd.args(["-c", script]).arg(&path);
    let out = run(&mut cmd);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !said.contains("No module named 'yaml'"),
        "{DEBIAN_PYTHON} has no yaml module: apt-get install python3-yaml"
    );
    assert!(
        out.status.success(),
        "{relative} is not valid YAML:\n{said}"
    );
    serde_json::from_slice(&out.stdout).expect("JSON from python3")
}

/// contrib/docker/Dockerfile as instructions: comments dropped, continued
/// lines joined, each instruction with its arguments.
struct Dockerfile {
    instructions: Vec<(String, String)>,
}

impl Dockerfile {
    fn read() -> Dockerfile {
        let mut instructions = Vec::new();
        let mut pending = String::new();
        for line in read("contrib/docker/Dockerfile").lines() {
            if line.trim_start().starts_with('#') {
                continue;
            }
            match line.strip_suffix('\\') {
                Some(head) => pending.push_str(head),
                None => {
                    pending.push_str(line);
                    let whole = pending.split_whitespace().collect::<Vec<_>>().join(" ");
                    pending.clear();
                    if let Some((op, args)) = whole.split_once(' ') {
                        instructions.push((op.to_uppercase(), args.to_string()));
                    }
                }
            }
        }
        Dockerfile { instructions }
    }

    fn all<'a>(&'a self, op: &str) -> impl Iterator<Item = &'a String> + 'a {
        let op = op.to_string();
        self.instructions
            .iter()
            .filter(move |(o, _)| *o == op)
            .map(|(_, args)| args)
    }

    /// The arguments of the one instruction `op`.
    fn one(&self, op: &str) -> &str {
        let all: Vec<&String> = self.all(op).collect();
        match all[..] {
            [args] => args,
            _ => panic!("Dockerfile: one {op} expected: {all:?}"),
        }
    }
}
