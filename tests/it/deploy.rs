//! The files under `deploy/` (systemd units, the Kubernetes CronJob, the Dockerfile): they
//! parse, keep the properties a scheduled per-tenant run relies on (one run at a time,
//! `--overwrite` over each night's export with persistent results, secrets from the
//! scheduler's secret store, non-root), and use only flags `run` has.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use yaml_rust2::{Yaml, YamlLoader};

fn deploy(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(name)
}

fn read(name: &str) -> String {
    std::fs::read_to_string(deploy(name)).unwrap_or_else(|e| panic!("deploy/{name}: {e}"))
}

/// A systemd unit file: sections of `key=value` in order (keys repeat), continuation lines
/// joined, comments dropped.
struct Unit {
    entries: Vec<(String, String, String)>,
}

impl Unit {
    fn parse(text: &str) -> Unit {
        let mut entries = Vec::new();
        let mut section = String::new();
        let mut pending = String::new();
        for raw in text.lines() {
            let line = raw.trim();
            if pending.is_empty() && (line.is_empty() || line.starts_with(['#', ';'])) {
                continue;
            }
            if let Some(rest) = line.strip_suffix('\\') {
                pending.push_str(rest);
                pending.push(' ');
                continue;
            }
            let line = std::mem::take(&mut pending) + line;
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name.to_string();
                continue;
            }
            let (key, value) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("not key=value: {line:?}"));
            assert!(!section.is_empty(), "{key} before any section");
            entries.push((section.clone(), key.trim().into(), value.trim().into()));
        }
        assert!(pending.is_empty(), "a continuation line ends the file");
        Unit { entries }
    }

    fn all(&self, section: &str, key: &str) -> Vec<&str> {
        self.entries
            .iter()
            .filter(|(s, k, _)| s == section && k == key)
            .map(|(_, _, v)| v.as_str())
            .collect()
    }

    fn one(&self, section: &str, key: &str) -> &str {
        match self.all(section, key)[..] {
            [v] => v,
            ref other => panic!("[{section}] {key}: expected one value, found {other:?}"),
        }
    }

    /// The command lines the unit runs.
    fn commands(&self) -> Vec<&str> {
        self.entries
            .iter()
            .filter(|(_, k, _)| k.starts_with("Exec"))
            .map(|(_, _, v)| v.as_str())
            .collect()
    }
}

#[test]
fn the_service_template_runs_one_tenant_resumably_without_a_secret_in_it() {
    let unit = Unit::parse(&read("systemd/autopilot-bulk@.service"));
    assert_eq!(unit.one("Service", "Type"), "oneshot");
    let user = unit.one("Service", "User");
    assert!(
        !user.is_empty() && user != "root" && user != "0",
        "runs as {user}"
    );
    assert_eq!(unit.one("Service", "StateDirectory"), "autopilot-bulk/%i");
    let exec = unit.one("Service", "ExecStart");
    let words: Vec<&str> = exec.split_whitespace().collect();
    assert_eq!(words[..2], ["/usr/local/bin/autopilot-bulk", "run"]);
    // Any night's export, changed or not: read before write, never --resume's same input.
    assert!(words.contains(&"--overwrite"), "{exec}");
    for flag in ["--output", "--summary-json"] {
        let at = words.iter().position(|w| *w == flag).expect(flag);
        assert!(
            words[at + 1].starts_with("/var/lib/autopilot-bulk/%i/"),
            "{flag} {}",
            words[at + 1]
        );
    }
    // Exit 1 is "some rows failed", not a failed unit.
    let success: Vec<&str> = unit
        .all("Service", "SuccessExitStatus")
        .iter()
        .flat_map(|v| v.split_whitespace())
        .collect();
    assert!(success.contains(&"1"), "{success:?}");
    // The secret comes from a systemd credential (or the 0600 environment file), never the
    // unit itself.
    assert!(
        unit.one("Service", "LoadCredential")
            .starts_with("client-secret:/etc/")
    );
    assert!(exec.contains("--client-secret-file ${CREDENTIALS_DIRECTORY}/client-secret"));
    assert!(unit.one("Service", "EnvironmentFile").contains("%i"));
    for value in unit.all("Service", "Environment") {
        assert!(!value.contains("SECRET"), "a secret in the unit: {value}");
    }
}

#[test]
fn the_timer_template_starts_the_service_nightly() {
    let timer = Unit::parse(&read("systemd/autopilot-bulk@.timer"));
    assert!(!timer.one("Timer", "OnCalendar").is_empty());
    assert_eq!(timer.one("Timer", "Persistent"), "true");
    assert_eq!(timer.one("Install", "WantedBy"), "timers.target");
    // No Unit=: the timer starts the service of the same instance name.
    assert!(timer.all("Timer", "Unit").is_empty());
}

fn yaml_documents() -> Vec<Yaml> {
    YamlLoader::load_from_str(&read("kubernetes/cronjob.yaml")).expect("valid YAML")
}

fn kind<'a>(docs: &'a [Yaml], kind: &str) -> &'a Yaml {
    docs.iter()
        .find(|d| d["kind"].as_str() == Some(kind))
        .unwrap_or_else(|| panic!("no {kind} in cronjob.yaml"))
}

fn strings(y: &Yaml) -> Vec<&str> {
    y.as_vec()
        .map(|v| v.iter().filter_map(Yaml::as_str).collect())
        .unwrap_or_default()
}

#[test]
fn the_cronjob_runs_one_at_a_time_resumably_as_non_root() {
    let docs = yaml_documents();
    let cron = kind(&docs, "CronJob");
    assert_eq!(cron["apiVersion"].as_str(), Some("batch/v1"));
    assert_eq!(cron["spec"]["concurrencyPolicy"].as_str(), Some("Forbid"));
    assert!(cron["spec"]["schedule"].as_str().is_some());
    let pod = &cron["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    assert_eq!(pod["restartPolicy"].as_str(), Some("Never"));
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    assert!(
        pod["securityContext"]["runAsUser"]
            .as_i64()
            .is_some_and(|u| u > 0)
    );

    let containers = pod["containers"].as_vec().expect("containers");
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    let security = &c["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(security["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert_eq!(strings(&security["capabilities"]["drop"]), ["ALL"]);

    let args = strings(&c["args"]);
    assert_eq!(args.first(), Some(&"run"));
    assert!(args.contains(&"--overwrite"), "{args:?}");

    // The secret only by reference to a Secret.
    let env = c["env"].as_vec().expect("env");
    let secret = env
        .iter()
        .find(|e| e["name"].as_str() == Some("AZURE_CLIENT_SECRET"))
        .expect("AZURE_CLIENT_SECRET");
    assert!(secret["value"].is_badvalue(), "a literal secret");
    let key_ref = &secret["valueFrom"]["secretKeyRef"];
    assert!(key_ref["name"].as_str().is_some() && key_ref["key"].as_str().is_some());

    // Results and summary on the claim's volume: the last night's, and the run lock.
    let claim = kind(&docs, "PersistentVolumeClaim")["metadata"]["name"]
        .as_str()
        .expect("claim name");
    let volume = pod["volumes"]
        .as_vec()
        .expect("volumes")
        .iter()
        .find(|v| v["persistentVolumeClaim"]["claimName"].as_str() == Some(claim))
        .and_then(|v| v["name"].as_str())
        .expect("a volume of the claim");
    let mount = c["volumeMounts"]
        .as_vec()
        .expect("mounts")
        .iter()
        .find(|m| m["name"].as_str() == Some(volume))
        .and_then(|m| m["mountPath"].as_str())
        .expect("the claim mounted");
    for flag in ["--output", "--summary-json"] {
        let at = args.iter().position(|a| *a == flag).expect(flag);
        assert!(
            args[at + 1].starts_with(&format!("{mount}/")),
            "{flag} {} not on the claim at {mount}",
            args[at + 1]
        );
    }
}

#[test]
fn the_dockerfile_is_a_multi_stage_build_without_openssl() {
    let text = read("Dockerfile");
    let froms: Vec<&str> = text
        .lines()
        .filter(|l| l.trim_start().to_ascii_uppercase().starts_with("FROM "))
        .collect();
    assert!(froms.len() >= 2, "not multi-stage: {froms:?}");
    assert!(froms[0].contains("rust:1-slim"), "{froms:?}");
    for line in text.lines().filter(|l| l.trim_start().starts_with("RUN ")) {
        let lower = line.to_ascii_lowercase();
        assert!(!lower.contains("ssl"), "installs a TLS library: {line}");
    }
    let user = text
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("USER "))
        .expect("a USER");
    assert!(
        !user.starts_with("root") && !user.starts_with("0"),
        "USER {user}"
    );
}

/// `--flags` of `run --help`.
fn run_flags() -> BTreeSet<String> {
    let out = assert_cmd::Command::cargo_bin("autopilot-bulk")
        .expect("binary")
        .args(["run", "--help"])
        .output()
        .expect("runs");
    assert!(out.status.success());
    flags(&String::from_utf8_lossy(&out.stdout))
}

fn flags(text: &str) -> BTreeSet<String> {
    text.split(|c: char| c.is_whitespace() || "\"'[],=".contains(c))
        .filter(|t| t.starts_with("--") && t[2..].starts_with(|c: char| c.is_ascii_alphabetic()))
        .map(str::to_string)
        .collect()
}

/// The parts of a deploy file that are autopilot-bulk command lines: other tools' flags
/// (cargo's in the Dockerfile, systemctl's in a comment) are not ours to check. A file of a
/// kind not named here is checked whole.
fn command_text(name: &str, text: &str) -> String {
    if name.ends_with(".service") || name.ends_with(".timer") {
        Unit::parse(text).commands().join("\n")
    } else if name.ends_with(".yaml") || name.ends_with(".yml") {
        let docs = YamlLoader::load_from_str(text).expect("valid YAML");
        let mut words = Vec::new();
        for doc in &docs {
            let pod = &doc["spec"]["jobTemplate"]["spec"]["template"]["spec"];
            for c in pod["containers"].as_vec().into_iter().flatten() {
                words.extend(strings(&c["command"]));
                words.extend(strings(&c["args"]));
            }
        }
        words.join("\n")
    } else if name.ends_with("Dockerfile") {
        text.lines()
            .filter(|l| l.starts_with("ENTRYPOINT") || l.starts_with("CMD"))
            .collect::<Vec<_>>()
            .join("\n")
    } else {
        text.to_string()
    }
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("deploy/ readable") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

#[test]
fn every_flag_in_deploy_is_a_run_flag() {
    let known = run_flags();
    assert!(known.contains("--resume") && known.contains("--tenants"));
    let root = deploy("");
    let mut files = Vec::new();
    files_under(&root, &mut files);
    files.sort();
    let mut checked = 0;
    for path in &files {
        let name = path
            .strip_prefix(&root)
            .expect("under deploy/")
            .display()
            .to_string();
        let text = std::fs::read_to_string(path).expect("text file");
        let used = flags(&command_text(&name, &text));
        let unknown: Vec<&String> = used.difference(&known).collect();
        assert!(
            unknown.is_empty(),
            "deploy/{name}: not run flags: {unknown:?}"
        );
        checked += used.len();
    }
    // The service, the CronJob and the environment example name several flags each.
    assert!(checked >= 10, "only {checked} flags found in {files:?}");
}

/// The README's fenced block of `lang` whose text contains `marker`.
fn readme_block(lang: &str, marker: &str) -> String {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let fence = format!("```{lang}\n");
    readme
        .split(&fence)
        .skip(1)
        .filter_map(|rest| rest.split("\n```").next())
        .find(|block| block.contains(marker))
        .unwrap_or_else(|| panic!("no ```{lang} block with {marker} in README.md"))
        .to_string()
}

/// The Windows Scheduled Task recipe: one instance at a time, the secret from a file (never in
/// the task), and its autopilot-bulk command line one that `run` takes: run as written with
/// `--dry-run` against the in-process emulator in a folder holding the input it names.
#[test]
fn the_scheduled_task_recipe_runs_one_instance_with_a_command_line_run_takes() {
    let recipe = readme_block("powershell", "Register-ScheduledTask");
    assert!(recipe.contains("-MultipleInstances IgnoreNew"), "{recipe}");
    assert!(
        recipe.contains("New-ScheduledTaskTrigger -Daily"),
        "{recipe}"
    );
    assert!(
        !recipe.contains("AZURE_CLIENT_SECRET"),
        "the secret stays in a file"
    );
    assert!(
        recipe.contains("-Execute 'C:\\autopilot\\autopilot-bulk.exe'"),
        "{recipe}"
    );
    let argument = recipe
        .split("-Argument '")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .expect("the task's -Argument");
    let words: Vec<&str> = argument.split_whitespace().collect();
    assert_eq!(words[..2], ["run", "nightly.csv"], "{argument}");
    assert!(words.contains(&"--client-secret-file") && words.contains(&"-q"));
    let known = run_flags();
    let unknown: Vec<String> = flags(argument).difference(&known).cloned().collect();
    assert!(unknown.is_empty(), "not run flags: {unknown:?}");

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("nightly.csv"), crate::common::group_rows(3)).unwrap();
    let out = crate::common::bin()
        .current_dir(dir.path())
        .args(&words)
        .args(["--dry-run", "--emulator"])
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        !dir.path().join("nightly.results.csv").exists(),
        "a dry run writes no results"
    );
}
