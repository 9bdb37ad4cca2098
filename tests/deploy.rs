//! The deployment files (Dockerfile, docker-compose.yml, deploy/k8s/, deploy/airflow/) validated as
//! far as a machine without a Docker engine, a cluster or Airflow's scheduler allows:
//! `scripts/validate_deploy.sh` (Compose's own `config`, the Kubernetes schemas, hadolint, the DAG
//! imported by Airflow, and every flag they pass checked against this binary's `--help`).

use std::process::Command;

#[test]
fn deployment_files_validate_against_their_schemas_and_this_binary() {
    let output = Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/validate_deploy.sh"
        ))
        .env("SESSIONIZE_BIN", env!("CARGO_BIN_EXE_sessionize"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
