//! Upstream's workflows, as the README rewrites them (issue 16). The
//! README's own YAML `run:` blocks and Makefile recipes are taken from its
//! text and run with bash (and make) as a runner would, `cargo xtask` being
//! the built binary, so the README and this test cannot drift: the release
//! flow in order against the loopback GitHub, then `resources --version`;
//! function_ci's rewrite on an artifact made by replaying upstream's
//! `artifacts.sh compress-split` literally. Then the refusals of `upload` by
//! id and `--as`, and of `decompress --from PREFIX`.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use testkit::{fake_elf, make_qcow2, ReleaseSpec, Server, TempDir};

const TOKEN: &str = "ghp_testtoken0123456789";
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

/// The id the fake GitHub gave release `tag`.
fn id_of(server: &Server, tag: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(&server.release_json(tag).unwrap()).unwrap();
    v["id"].as_u64().unwrap().to_string()
}

fn qemu_raw(img: &Path, out: &Path) -> Vec<u8> {
    let st = Command::new("qemu-img")
        .args(["convert", "-f", "qcow2", "-O", "raw"])
        .arg(img)
        .arg(out)
        .status()
        .unwrap();
    assert!(st.success());
    fs::read(out).unwrap()
}

fn held_names(server: &Server, tag: &str) -> Vec<String> {
    let held = server.assets_of(tag);
    assert!(held.iter().all(|(_, s, _)| s == "uploaded"), "{held:?}");
    let mut n: Vec<String> = held.into_iter().map(|(n, _, _)| n).collect();
    n.sort();
    n
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

// ---- refusals ----

fn upload_with(server: &Server, args: &[&str], envs: &[(&str, &str)]) -> Run {
    let api = server.api_url();
    let mut all = vec!["resources", "upload", "--github-api", api.as_str()];
    all.extend_from_slice(args);
    let mut env = vec![("GH_TOKEN", TOKEN)];
    env.extend_from_slice(envs);
    xtask(&all, &env)
}

#[test]
fn release_id_is_a_positive_number_from_the_flag_or_else_the_environment() {
    let t = TempDir::new("wf-id");
    let f = t.path().join("a.bin");
    fs::write(&f, b"bytes").unwrap();
    let f = f.to_str().unwrap();
    let server = Server::start(REPO, vec![ReleaseSpec::new("v1", vec![])]);
    for (args, env, names) in [
        (vec![f], vec![("RELEASE_ID", "abc")], "RELEASE_ID"),
        (vec![f], vec![("RELEASE_ID", "0")], "RELEASE_ID"),
        (vec![f], vec![("RELEASE_ID", "-5")], "RELEASE_ID"),
        (vec!["--release-id", "12a", f], vec![], "--release-id"),
        (vec!["--release-id", "0", f], vec![], "--release-id"),
    ] {
        let run = upload_with(&server, &args, &env);
        assert_eq!(run.code, 2, "{args:?} {env:?}: {}", run.stderr);
        assert!(run.stderr.contains(names), "{}", run.stderr);
    }
    assert_eq!(server.request_count(), 0, "a usage error sends nothing");

    // An empty RELEASE_ID counts as unset; --release-id wins over the variable.
    let id = id_of(&server, "v1");
    upload_with(&server, &["--version", "v1", f], &[("RELEASE_ID", "")]).ok();
    let run = upload_with(&server, &["--release-id", &id, f], &[("RELEASE_ID", "777")]);
    run.ok();
    assert!(run.stdout.contains("1 already there"), "{}", run.stdout);
    assert_eq!(held_names(&server, "v1"), ["a.bin"]);
}

#[test]
fn an_unknown_release_id_is_named_with_the_repo_and_nothing_is_sent() {
    let t = TempDir::new("wf-id404");
    let f = t.path().join("a.bin");
    fs::write(&f, b"bytes").unwrap();
    let server = Server::start(REPO, vec![ReleaseSpec::new("v1", vec![])]);
    let run = upload_with(&server, &[f.to_str().unwrap()], &[("RELEASE_ID", "987654")]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    for needle in ["987654", REPO, "check RELEASE_ID"] {
        assert!(run.stderr.contains(needle), "{needle}: {}", run.stderr);
    }
    assert!(server.assets_of("v1").is_empty());
    assert!(!server.requests().iter().any(|r| r.method == "POST"));
}

#[test]
fn an_id_and_a_tag_must_name_one_release_and_create_takes_no_id() {
    let t = TempDir::new("wf-idtag");
    let f = t.path().join("a.bin");
    fs::write(&f, b"bytes").unwrap();
    let f = f.to_str().unwrap();
    let server = Server::start(
        REPO,
        vec![
            ReleaseSpec::new("v2", vec![]),
            ReleaseSpec::new("v1", vec![]),
        ],
    );
    let id2 = id_of(&server, "v2");
    let run = upload_with(&server, &["--version", "v1", f], &[("RELEASE_ID", &id2)]);
    run.failed();
    assert!(
        run.stderr.contains("not --version v1") && run.stderr.contains("v2"),
        "{}",
        run.stderr
    );
    assert!(server.assets_of("v1").is_empty() && server.assets_of("v2").is_empty());
    // The same release by both: fine.
    upload_with(&server, &["--version", "v2", "--release-id", &id2, f], &[]).ok();
    assert_eq!(held_names(&server, "v2"), ["a.bin"]);

    let run = upload_with(
        &server,
        &["--create", "--version", "v3", f],
        &[("RELEASE_ID", &id2)],
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("--create") && run.stderr.contains("RELEASE_ID"));
    let run = upload_with(&server, &[f], &[]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("--release-id"), "{}", run.stderr);
}

#[test]
fn as_renames_exactly_one_file_to_a_name_github_keeps() {
    let t = TempDir::new("wf-as");
    // A file whose own name GitHub would mangle: --as is what it is sent as.
    let k = t.path().join("my kernel");
    fs::write(&k, fake_elf("amd64")).unwrap();
    let k = k.to_str().unwrap();
    let server = Server::start(REPO, vec![ReleaseSpec::new("v1", vec![])]);
    let run = upload_with(&server, &["--version", "v1", k, k, "--as", "x"], &[]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("exactly one FILE"), "{}", run.stderr);
    for bad in [
        "../x", "a b", ".hidden", "x.", "k#label", "a..b", "d/x", "é",
    ] {
        let run = upload_with(&server, &["--version", "v1", k, "--as", bad], &[]);
        assert_eq!(run.code, 2, "{bad}: {}", run.stderr);
        assert!(run.stderr.contains("--as"), "{bad}: {}", run.stderr);
    }
    assert_eq!(server.request_count(), 0);

    let args = ["--version", "v1", k, "--as", "vmlinux-focal-amd64"];
    upload_with(&server, &args, &[]).ok();
    let held = server.assets_of("v1");
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].0, "vmlinux-focal-amd64");
    assert_eq!(held[0].2, fake_elf("amd64"));
    // Again: the asset NAME holds these bytes already.
    let run = upload_with(&server, &args, &[]);
    run.ok();
    assert!(run.stdout.contains("1 already there"), "{}", run.stdout);
    // Other bytes under that NAME: refused unless --clobber.
    let other = t.path().join("other");
    fs::write(&other, b"other kernel").unwrap();
    let args = [
        "--version",
        "v1",
        other.to_str().unwrap(),
        "--as",
        "vmlinux-focal-amd64",
    ];
    let run = upload_with(&server, &args, &[]);
    run.failed();
    assert!(run.stderr.contains("--clobber"), "{}", run.stderr);
}

/// An un-renamed set (a CI artifact's names) in `dir`: `parts` suffixes,
/// and the sums if `sums`.
fn artifact_set(dir: &Path, parts: &[&str], sums: bool) {
    fs::create_dir_all(dir).unwrap();
    for (i, s) in parts.iter().enumerate() {
        let name = format!("disk-image.qcow2.tar.gz.{s}");
        fs::write(dir.join(name), noise(1000, i as u64)).unwrap();
    }
    if sums {
        let line = format!("{}  temp/disk-image.qcow2\n", "ab".repeat(32));
        fs::write(dir.join("disk-image.qcow2.sums"), line).unwrap();
    }
}

#[test]
fn a_part_renamed_with_as_is_sent_only_as_itself_from_a_whole_set() {
    let t = TempDir::new("wf-as-set");
    let server = Server::start(REPO, vec![ReleaseSpec::new("v1", vec![])]);
    let send = |file: &Path, name: &str| {
        let args = ["--version", "v1", file.to_str().unwrap(), "--as", name];
        upload_with(&server, &args, &[])
    };
    let gz = "disk-image-focal-amd64.qcow2.tar.gz";
    let whole = t.path().join("whole");
    artifact_set(&whole, &["aa", "ab"], true);
    send(
        &whole.join("disk-image.qcow2.tar.gz.ab"),
        &format!("{gz}.ab"),
    )
    .ok();
    send(
        &whole.join("disk-image.qcow2.sums"),
        "disk-image-focal-amd64.qcow2.sums",
    )
    .ok();

    // Another member's name: refused, whole set or not.
    let run = send(
        &whole.join("disk-image.qcow2.tar.gz.ab"),
        &format!("{gz}.aa"),
    );
    run.failed();
    assert!(run.stderr.contains(".tar.gz.aa"), "{}", run.stderr);
    let notes = whole.join("notes.txt");
    fs::write(&notes, b"notes").unwrap();
    let run = send(&notes, "disk-image-focal-amd64.qcow2.sums");
    run.failed();
    assert!(run.stderr.contains(".sums"), "{}", run.stderr);

    // A set without its sums, or with a gap: refused, naming what is missing.
    let nosums = t.path().join("nosums");
    artifact_set(&nosums, &["aa", "ab"], false);
    let run = send(
        &nosums.join("disk-image.qcow2.tar.gz.aa"),
        &format!("{gz}.aa"),
    );
    run.failed();
    assert!(
        run.stderr.contains("disk-image.qcow2.sums"),
        "{}",
        run.stderr
    );
    let gap = t.path().join("gap");
    artifact_set(&gap, &["aa", "ac"], true);
    let run = send(&gap.join("disk-image.qcow2.tar.gz.aa"), &format!("{gz}.aa"));
    run.failed();
    assert!(
        run.stderr.contains("disk-image.qcow2.tar.gz.ab"),
        "{}",
        run.stderr
    );

    assert_eq!(
        held_names(&server, "v1"),
        [
            "disk-image-focal-amd64.qcow2.sums".to_string(),
            format!("{gz}.ab")
        ]
    );
}

/// `decompress --from FROM` into a fresh output; it must fail.
fn from_fails(t: &TempDir, from: &Path, what: &str) -> String {
    let out = t.path().join(format!("out-{what}"));
    let args = ["--from", from.to_str().unwrap()];
    let run = resources(Some("decompress"), &out, "http://127.0.0.1:9", &args, &[]);
    run.failed();
    assert!(!out.join("disk-image.qcow2").exists(), "{what}");
    run.stderr.clone()
}

#[test]
fn decompress_from_a_prefix_names_the_prefix_and_what_it_looked_for() {
    let t = TempDir::new("wf-prefix");
    let empty = t.path().join("empty");
    fs::create_dir_all(&empty).unwrap();
    let prefix = empty.join("disk-image.qcow2");
    let e = from_fails(&t, &prefix, "none");
    let shown = prefix.to_str().unwrap();
    assert!(e.contains(shown) && e.contains("looked for"), "{e}");
    assert!(e.contains("disk-image.qcow2.tar.gz.aa") && e.contains("disk-image.qcow2.sums"));

    let nosums = t.path().join("nosums");
    artifact_set(&nosums, &["aa", "ab"], false);
    let prefix = nosums.join("disk-image.qcow2");
    let e = from_fails(&t, &prefix, "nosums");
    assert!(e.contains(prefix.to_str().unwrap()), "{e}");
    assert!(e.contains("holds no disk-image.qcow2.sums"), "{e}");

    let gap = t.path().join("gap");
    artifact_set(&gap, &["aa", "ab", "ac"], true);
    fs::remove_file(gap.join("disk-image.qcow2.tar.gz.ab")).unwrap();
    let e = from_fails(&t, &gap.join("disk-image.qcow2"), "gap");
    assert!(e.contains("disk-image.qcow2.tar.gz.ab is missing"), "{e}");

    let e = from_fails(&t, &t.path().join("nowhere/disk-image.qcow2"), "nodir");
    assert!(e.contains("is not a directory"), "{e}");

    // A directory of two un-renamed sets: which one is not guessed.
    let two = t.path().join("two");
    artifact_set(&two, &["aa"], true);
    fs::write(two.join("disk.qcow2.tar.gz.aa"), b"x").unwrap();
    fs::write(two.join("disk.qcow2.sums"), b"x").unwrap();
    let e = from_fails(&t, &two, "two");
    assert!(
        e.contains("disk-image.qcow2, disk.qcow2") && e.contains("prefix"),
        "{e}"
    );
}
