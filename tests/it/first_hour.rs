//! The first hour of a new admin: recipes as the README writes them must work as written.

use crate::common;

use autopilot_bulk::emulator::{Emulator, EmulatorConfig};
use common::*;

/// A Kubernetes secret made with `printf '%s\n'` (or any secret file) hands the variable its
/// trailing line break; Entra ID would refuse the secret with it, so it is not part of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_from_the_environment_loses_its_trailing_newline() {
    let emulator = Emulator::start(EmulatorConfig {
        client_secret: Some("Qx8~vT3pL".into()),
        ..emulator_config(rate(1000, 1000))
    })
    .await
    .unwrap();
    let (_dir, path) = input(&group_rows(2));
    let run = |secret: &str| {
        let mut cmd = bin();
        cmd.arg("run")
            .arg(&path)
            .args(["--graph-url", &emulator.graph_url()])
            .args(["--authority-url", &emulator.authority_url()])
            .args(["-q", "--overwrite"])
            .env("AZURE_TENANT_ID", "contoso")
            .env("AZURE_CLIENT_ID", "app")
            .env("AZURE_CLIENT_SECRET", secret);
        async move {
            let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
                .await
                .unwrap();
            (out.status.code(), text(&out.stderr))
        }
    };
    let (code, stderr) = run("Qx8~vT3pL\n").await;
    assert_eq!(code, Some(0), "{stderr}");
    let (code, stderr) = run("Qx8~vT3pL\r\n").await;
    assert_eq!(code, Some(0), "{stderr}");
    // Other characters are the secret's own: a wrong one is still refused.
    let (code, stderr) = run("Qx8~vT3pL \n").await;
    assert_eq!(code, Some(3), "{stderr}");
    assert!(
        !stderr.contains("Qx8~vT3pL"),
        "the secret was echoed: {stderr}"
    );
    emulator.shutdown().await;
}
