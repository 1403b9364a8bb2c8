//! Upstream's workflows, as the README rewrites them (issue 16). The
//! README's own YAML `run:` blocks and Makefile recipes are taken from its
//! text and run with bash (and make) as a runner would, `cargo xtask` being
//! the built binary, so the README and this test cannot drift: the release
//! flow in order against the loopback GitHub, then `resources --version`;
//! function_ci's rewrite on an artifact made by replaying upstream's
//! `artifacts.sh compress-split` literally; the Makefile's targets.

use crate::common::*;
use crate::fixtures::{held_names, qemu_raw, TOKEN};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use testkit::{fake_elf, make_qcow2, Server, TempDir};

const TAG: &str = "v0.4.0";

/// The maintainers' page, which the README links to.
fn maintainers_section() -> String {
    fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/maintainers.md")).unwrap()
}

/// Replaces every `${{ EXPR }}` in `text` from `vars`, as Actions does
/// before a step runs; an expression the test does not know fails it.
fn expand(text: &str, vars: &[(&str, &str)]) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("${{") {
        out.push_str(&rest[..i]);
        let end = rest[i..].find("}}").expect("unclosed ${{") + i;
        let expr = rest[i + 3..end].trim();
        let value = vars
            .iter()
            .find(|(k, _)| *k == expr)
            .unwrap_or_else(|| panic!("the README uses ${{{{ {expr} }}}}, unknown to this test"));
        out.push_str(value.1);
        rest = &rest[end + 2..];
    }
    out.push_str(rest);
    out
}

/// The `run: |` body of the README's YAML step under the comment line
/// `# FILE…: job JOB`, dedented and expanded with `vars`.
fn readme_run(file: &str, job: &str, vars: &[(&str, &str)]) -> String {
    let section = maintainers_section();
    let lines: Vec<&str> = section.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with(&format!("# {file}")) && l.ends_with(&format!("job {job}")))
        .unwrap_or_else(|| panic!("the README shows no step for {file}, job {job}"));
    let run = (at + 1..lines.len())
        .find(|&i| lines[i].trim() == "run: |")
        .unwrap_or_else(|| panic!("no `run: |` after {file}, job {job}"));
    let indent = |l: &str| l.len() - l.trim_start().len();
    let body: Vec<&str> = lines[run + 1..]
        .iter()
        .take_while(|l| !l.trim().is_empty() && indent(l) > indent(lines[run]))
        .copied()
        .collect();
    let cut = body.iter().map(|l| indent(l)).min().unwrap_or(0);
    let text: Vec<&str> = body.iter().map(|l| &l[cut..]).collect();
    expand(&(text.join("\n") + "\n"), vars)
}

/// A directory holding `cargo`, a stand-in that runs the built xtask for
/// `cargo xtask …` and refuses anything else.
fn cargo_shim(t: &TempDir) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let bin = t.path().join("bin");
    fs::create_dir_all(&bin).unwrap();
    let shim = bin.join("cargo");
    fs::write(
        &shim,
        "#!/bin/sh\n[ \"$1\" = xtask ] || { echo \"test shim: only cargo xtask\" >&2; exit 99; }\n\
         shift\nexec \"$XTASK_BIN\" \"$@\"\n",
    )
    .unwrap();
    fs::set_permissions(&shim, fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

/// Runs `program args` in `dir` as a runner would, with a clean
/// environment plus `env`, `cargo xtask` being the built binary.
fn in_job(t: &TempDir, dir: &Path, program: &str, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(program);
    cmd.args(args).current_dir(dir);
    for k in testkit::SCRUB_ENV {
        cmd.env_remove(k);
    }
    let path = format!(
        "{}:{}",
        cargo_shim(t).display(),
        std::env::var("PATH").unwrap_or_default()
    );
    cmd.env("PATH", path)
        .env("XTASK_BIN", env!("CARGO_BIN_EXE_xtask"))
        .env("CI", "1")
        .env("VSWARM_HTTP_TIMEOUT", "5")
        .env("VSWARM_CACHE_DIR", t.path().join("runner-cache"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("start the step");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A `run:` step: bash as GitHub runs it (`bash -e -o pipefail`).
fn run_step(t: &TempDir, dir: &Path, body: &str, env: &[(&str, &str)]) -> Run {
    let args = ["--noprofile", "--norc", "-eo", "pipefail", "-c", body];
    in_job(t, dir, "bash", &args, env)
}

/// A job's fresh workspace holding `files` (what its download steps fetch).
fn workspace(t: &TempDir, job: &str, files: &[(&str, &[u8])]) -> PathBuf {
    let ws = t.path().join(job);
    for (name, bytes) in files {
        let p = ws.join(name);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, bytes).unwrap();
    }
    fs::create_dir_all(&ws).unwrap();
    ws
}

/// What softprops/action-gh-release does in `prepare-release`: POST the
/// release, a published pre-release; its `id` is the jobs' `RELEASE_ID`.
fn create_release(server: &Server, tag: &str, draft: bool) -> String {
    let agent: ureq::Agent = ureq::Agent::config_builder().proxy(None).build().into();
    let body = serde_json::json!({
        "tag_name": tag, "name": format!("Release refs/tags/{tag}"),
        "draft": draft, "prerelease": true,
    });
    let mut resp = agent
        .post(format!("{}/repos/{REPO}/releases", server.api_url()))
        .header("Authorization", format!("Bearer {TOKEN}"))
        .content_type("application/json")
        .send(body.to_string())
        .expect("create the release");
    assert_eq!(resp.status().as_u16(), 201);
    let v: serde_json::Value =
        serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
    v["id"].as_u64().expect("the release's id").to_string()
}

fn client_bytes() -> Vec<u8> {
    let mut c = fake_elf("amd64");
    c.extend_from_slice(b"test client");
    c
}

/// Everything a full run into a fresh `out` installs equals what was
/// released: kernel, client, the qcow2, and the raw image qemu-img makes.
fn check_installed(t: &TempDir, out: &Path, img: &Path) {
    assert_eq!(fs::read(out.join("kernel")).unwrap(), fake_elf("amd64"));
    assert_eq!(fs::read(out.join("client")).unwrap(), client_bytes());
    assert_eq!(
        fs::read(out.join("disk-image.qcow2")).unwrap(),
        fs::read(img).unwrap(),
        "qcow2 byte-identical"
    );
    let want = qemu_raw(img, &t.path().join("qemu.raw"));
    assert_eq!(fs::read(out.join("disk-image.img")).unwrap(), want);
}

/// `artifacts.sh compress-split temp/*` step by step, as upstream's
/// create_base_disk*.yml runs it (`shasum`, `tar c | pigz -c`, `split`),
/// into `build/temp/`; sha256sum and gzip where shasum and pigz are absent.
fn upstream_compress_split(t: &TempDir, build: &Path, size: &str) {
    let sha = if have("shasum") {
        "shasum -a 256"
    } else {
        "sha256sum"
    };
    let gz = if have("pigz") { "pigz -c" } else { "gzip -c" };
    let script = format!(
        "{sha} temp/disk-image.qcow2 > temp/disk-image.qcow2.sums\n\
         tar c temp/disk-image.qcow2 | {gz} > tmp.tar.gz\n\
         split -b {size} tmp.tar.gz temp/disk-image.qcow2.tar.gz.\n\
         rm tmp.tar.gz\n\
         rm temp/disk-image.qcow2\n"
    );
    run_step(t, build, &script, &[]).ok();
}

/// The README's ```make block (the `resources/Makefile` targets).
fn readme_make_block() -> String {
    let section = maintainers_section();
    let start = section
        .find("```make\n")
        .expect("the README shows a make block")
        + 8;
    let len = section[start..].find("```").unwrap();
    section[start..start + len].to_string()
}

#[test]
fn readme_release_flow_replayed_in_order_gives_everything_back() {
    if !have("qemu-img") {
        eprintln!("skipped: qemu-img is not installed (apt-get install qemu-utils)");
        return;
    }
    let t = TempDir::new("wf-release");
    let server = Server::start(REPO, vec![]);
    let api = server.api_url();
    // prepare-release
    let id = create_release(&server, TAG, false);
    let job_env = [
        ("GITHUB_TOKEN", TOKEN),
        ("RELEASE_ID", id.as_str()),
        ("GITHUB_API_URL", api.as_str()),
    ];
    let matrix = [("matrix.os", "focal"), ("matrix.arch", "amd64")];

    // upload-kernel and upload-test-client: each artifact lands in tmp/.
    let kernel = fake_elf("amd64");
    let ws = workspace(&t, "upload-kernel", &[("tmp/kernel", &kernel)]);
    let step = readme_run("release.yml", "upload-kernel", &matrix);
    run_step(&t, &ws, &step, &job_env).ok();
    let ws = workspace(&t, "upload-client", &[("tmp/test-client", &client_bytes())]);
    let step = readme_run("release.yml", "upload-test-client", &matrix);
    run_step(&t, &ws, &step, &job_env).ok();

    // create_base_disk*.yml: the built image is packed into temp/, the artifact.
    let build = workspace(&t, "install-base-image", &[]);
    let img = build.join("artifacts/disk-image.qcow2");
    fs::create_dir_all(img.parent().unwrap()).unwrap();
    make_qcow2(&img, 32, 4).unwrap();
    let vars = [
        ("env.DISK_PRE_TEST", "artifacts/disk-image.qcow2"),
        ("matrix.ubuntu-version", "focal"),
        ("matrix.arch", "amd64"),
    ];
    let step = readme_run("create_base_disk.yml", "install-base-image", &vars);
    run_step(&t, &build, &step, &[]).ok();

    // upload-disk-image: the artifact downloaded into tmp/.
    let ws = workspace(&t, "upload-disk-image", &[]);
    fs::create_dir_all(ws.join("tmp")).unwrap();
    for name in files_in(&build.join("temp")) {
        fs::copy(build.join("temp").join(&name), ws.join("tmp").join(&name)).unwrap();
    }
    let step = readme_run("release.yml", "upload-disk-image", &matrix);
    run_step(&t, &ws, &step, &job_env).ok();

    assert_eq!(
        held_names(&server, TAG),
        [
            "disk-image-focal-amd64.qcow2.sums",
            "disk-image-focal-amd64.qcow2.tar.gz.aa",
            "test-client-amd64",
            "vmlinux-focal-amd64",
        ]
    );
    let out = t.path().join("resources");
    resources(None, &out, &api, &["--version", TAG], &[]).ok();
    check_installed(&t, &out, &img);
}

#[test]
fn readme_function_ci_step_unpacks_an_artifact_named_set_by_its_prefix() {
    if !have("qemu-img") {
        eprintln!("skipped: qemu-img is not installed (apt-get install qemu-utils)");
        return;
    }
    let t = TempDir::new("wf-fnci");
    let img = t.path().join("built.qcow2");
    make_qcow2(&img, 32, 4).unwrap();
    let build = workspace(&t, "build", &[]);
    fs::create_dir_all(build.join("temp")).unwrap();
    fs::copy(&img, build.join("temp/disk-image.qcow2")).unwrap();
    upstream_compress_split(&t, &build, "512k");
    let artifact = files_in(&build.join("temp"));
    assert!(
        artifact.contains(&"disk-image.qcow2.tar.gz.ab".to_string()),
        "{artifact:?}"
    );

    // prepare-artifacts: kernel and client into tmp/, the disk into disktmp/.
    let ci = workspace(
        &t,
        "prepare-artifacts",
        &[
            ("tmp/kernel", &fake_elf("amd64")),
            ("tmp/test-client", &client_bytes()),
        ],
    );
    fs::create_dir_all(ci.join("disktmp")).unwrap();
    for name in &artifact {
        fs::copy(build.join("temp").join(name), ci.join("disktmp").join(name)).unwrap();
    }
    let vars = [
        ("env.ARTIFACTS_DIR", "artifacts/"),
        ("env.KERNEL", "artifacts/kernel"),
        ("env.CLIENT", "artifacts/test-client"),
    ];
    let step = readme_run("function_ci.yml", "prepare-artifacts", &vars);
    assert!(step.contains("--from disktmp/disk-image.qcow2"), "{step}");
    run_step(&t, &ci, &step, &[]).ok();
    let got = ci.join("artifacts");
    assert_eq!(
        fs::read(got.join("disk-image.qcow2")).unwrap(),
        fs::read(&img).unwrap()
    );
    assert_eq!(fs::read(got.join("kernel")).unwrap(), fake_elf("amd64"));
    assert_eq!(fs::read(got.join("test-client")).unwrap(), client_bytes());

    // The directory form reads the same artifact: its one set, un-renamed.
    let out = t.path().join("from-dir");
    let disktmp = ci.join("disktmp");
    let from = ["--from", disktmp.to_str().unwrap()];
    resources(Some("decompress"), &out, "http://127.0.0.1:9", &from, &[]).ok();
    assert_eq!(
        fs::read(out.join("disk-image.qcow2")).unwrap(),
        fs::read(&img).unwrap()
    );
}

#[test]
fn readme_makefile_upload_and_download_targets_work_as_written() {
    if !have("qemu-img") || !have("make") {
        eprintln!("skipped: qemu-img or make is not installed");
        return;
    }
    let t = TempDir::new("wf-make");
    let server = Server::start(REPO, vec![]);
    let api = server.api_url();
    let id = create_release(&server, TAG, true);
    // Upstream's variables, then the README's targets.
    let res = workspace(
        &t,
        "resources",
        &[
            ("kernel", &fake_elf("amd64")),
            ("test-client", &client_bytes()),
        ],
    );
    let img = res.join("disk-image.qcow2");
    make_qcow2(&img, 32, 4).unwrap();
    let head = format!(
        "RESOURCES ?= {}/installed\nVERSION := {TAG}\nARCH := amd64\nOS_VERSION := focal\n\
         KERNEL ?= $(RESOURCES)/kernel\nDISK ?= $(RESOURCES)/disk-image.qcow2\n\
         TEST_CLIENT ?= $(RESOURCES)/test-client\nARTIFACT_KERNEL := vmlinux-$(OS_VERSION)-$(ARCH)\n\
         ARTIFACT_DISK := disk-image-$(OS_VERSION)-$(ARCH)\nARTIFACT_CLIENT := test-client-$(ARCH)\n\
         RELEASE_ID ?= 68604631\n\n",
        t.path().display()
    );
    fs::write(res.join("Makefile"), head + &readme_make_block()).unwrap();
    let env = [("GITHUB_TOKEN", TOKEN), ("GITHUB_API_URL", api.as_str())];
    let rel = format!("RELEASE_ID={id}");
    let res_var = format!("RESOURCES={}", res.display());
    let args = ["upload_all_artifacts", rel.as_str(), res_var.as_str()];
    in_job(&t, &res, "make", &args, &env).ok();
    // The draft, found by its id, holds the set under its release names.
    assert_eq!(server.is_draft(TAG), Some(true));
    assert_eq!(held_names(&server, TAG).len(), 4);

    // The draft is invisible to readers: publish it, then download-resources.
    assert!(server.publish(TAG));
    in_job(&t, &res, "make", &["download-resources"], &env).ok();
    check_installed(&t, &t.path().join("installed"), &img);
}
