//! The service file and the container image as an operator installs them:
//! the systemd unit verifies and keeps its hardening (systemd-analyze,
//! offline), the configuration they ship passes `testament check`, and the
//! Dockerfile holds what it promises. Building the image needs a Docker
//! engine and a registry, which CI does not have: the Dockerfile is linted
//! here, not built.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap()
}

/// The unit with its ExecStart on the binary under test (`verify` wants
/// the executable to exist), in a folder of its own.
fn unit_here(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("testament-unit-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let unit = read("deploy/testament.service")
        .replace("/usr/local/bin/testament", env!("CARGO_BIN_EXE_testament"));
    let path = dir.join("testament.service");
    std::fs::write(&path, unit).unwrap();
    path
}

fn systemd_analyze() -> bool {
    let found = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok();
    if !found {
        common::missing("systemd-analyze (Debian package systemd)");
    }
    found
}

#[test]
fn the_systemd_unit_verifies_and_keeps_its_hardening() {
    if !systemd_analyze() {
        return;
    }
    let unit = unit_here("verify");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    // A key systemd does not know, or a value it cannot parse, is only a
    // warning on standard error: none may be about the unit.
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("testament.service"), "{err}");
    // The exposure systemd computes from the hardening options: 1.2 today
    // ("OK"); 2.0 at most.
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--threshold=20"])
        .arg(&unit)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "exposure above 2.0:\n{text}");
    assert!(
        text.contains("Overall exposure level for testament.service"),
        "{text}"
    );
    // And a broken line is caught: the check can fail.
    let broken = unit.with_file_name("broken.service");
    std::fs::write(
        &broken,
        std::fs::read_to_string(&unit)
            .unwrap()
            .replace("ProtectSystem=strict", "ProtectSystem=strickt"),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&broken)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("broken.service"));
    let _ = std::fs::remove_dir_all(unit.parent().unwrap());
}

#[test]
fn the_shipped_configuration_passes_check_and_matches_the_unit_and_the_image() {
    let out = Command::new(env!("CARGO_BIN_EXE_testament"))
        .args(["check", "--config"])
        .arg(repo("deploy/testament.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let c = testament::config::Config::read(&repo("deploy/testament.toml")).unwrap();
    // Its data folder is the unit's StateDirectory and the image's volume.
    assert_eq!(c.data_dir, Path::new("/var/lib/testament"));
    let unit = read("deploy/testament.service");
    assert!(unit.contains("StateDirectory=testament"));
    assert!(unit.contains("--config /etc/testament/testament.toml"));
    let docker = read("Dockerfile");
    assert!(docker.contains("VOLUME [\"/var/lib/testament\"]"));
    // The ports it listens on are the ones the image exposes.
    let exposed: Vec<&str> = docker
        .lines()
        .find_map(|l| l.strip_prefix("EXPOSE "))
        .unwrap()
        .split_whitespace()
        .collect();
    let mut ports: Vec<String> = c
        .listen
        .iter()
        .map(|a| a.rsplit(':').next().unwrap().to_owned())
        .collect();
    ports.push(c.metrics.listen.rsplit(':').next().unwrap().to_owned());
    for p in &ports {
        assert!(
            exposed.contains(&p.as_str()),
            "{p} not exposed: {exposed:?}"
        );
    }
}

/// The Dockerfile's instructions, continuation lines joined, comments out.
fn instructions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(line);
                let (op, args) = current.split_once(' ').unwrap_or((&current, ""));
                out.push((op.to_uppercase(), args.trim().to_owned()));
                current.clear();
            }
        }
    }
    out
}

#[test]
fn the_dockerfile_builds_in_one_stage_and_runs_unprivileged_in_another() {
    let docker = instructions(&read("Dockerfile"));
    let stages: Vec<&String> = docker
        .iter()
        .filter(|(op, _)| op == "FROM")
        .map(|(_, a)| a)
        .collect();
    assert_eq!(stages.len(), 2, "multi-stage: {stages:?}");
    assert!(stages[0].ends_with(" AS build"), "{stages:?}");
    assert!(
        stages[1].contains("-slim"),
        "a small runtime image: {stages:?}"
    );
    let runtime_start = docker.iter().rposition(|(op, _)| op == "FROM").unwrap();
    let runtime = &docker[runtime_start..];
    let last = |op: &str| {
        runtime
            .iter()
            .rev()
            .find(|(o, _)| o == op)
            .map(|(_, a)| a.clone())
    };
    // Never root: a named user made in the image, chosen before the start.
    let user = last("USER").expect("a USER in the runtime stage");
    assert!(user != "root" && user != "0", "{user}");
    assert!(
        runtime
            .iter()
            .any(|(op, a)| op == "RUN" && a.contains("useradd --system") && a.contains(&user))
    );
    // The build is locked and released; the runtime copies that binary.
    assert!(
        docker
            .iter()
            .any(|(op, a)| op == "RUN" && a.contains("cargo build --release --locked"))
    );
    let copied = runtime
        .iter()
        .find(|(op, a)| op == "COPY" && a.starts_with("--from=build"))
        .map(|(_, a)| a.clone())
        .expect("the binary from the build stage");
    assert!(
        copied.contains("target/release/testament /usr/local/bin/testament"),
        "{copied}"
    );
    assert_eq!(
        last("ENTRYPOINT").as_deref(),
        Some("[\"/usr/local/bin/testament\"]")
    );
    assert!(
        last("CMD")
            .unwrap()
            .contains("/etc/testament/testament.toml")
    );
    assert!(
        runtime
            .iter()
            .any(|(op, a)| op == "COPY"
                && a == "deploy/testament.toml /etc/testament/testament.toml")
    );
    assert_eq!(last("STOPSIGNAL").as_deref(), Some("SIGTERM"));
    // The build context leaves out what is built here.
    let ignore = read(".dockerignore");
    assert!(ignore.lines().any(|l| l.trim() == "target"), "{ignore}");
}
