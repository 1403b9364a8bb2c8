//! What the maintainer-side tests share: a qemu-made image, `pack` and
//! `upload` runs against the loopback GitHub, and the files they leave.

use crate::common::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use testkit::{make_qcow2, Server};

pub const GZ: &str = "disk-image-focal-amd64.qcow2.tar.gz";

pub const SUMS: &str = "disk-image-focal-amd64.qcow2.sums";

/// A qemu-made image with patterns, random bytes, zeros and a hole.
pub fn image(dir: &Path) -> PathBuf {
    let img = dir.join("src.qcow2");
    make_qcow2(&img, 32, 4).unwrap();
    img
}

/// `pack IMG` into `out` with `extra` flags.
pub fn pack(img: &Path, out: &Path, extra: &[&str]) -> Run {
    let mut args = vec![
        "resources",
        "pack",
        img.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    xtask(&args, &[])
}

/// The files in `dir`, sorted, as paths.
pub fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}

pub fn file_names(paths: &[PathBuf]) -> Vec<String> {
    let mut n: Vec<String> = paths
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    n.sort();
    n
}

pub const TOKEN: &str = "ghp_review3token0123456789";

/// `upload --version TAG FILES… EXTRA…` with a token.
pub fn upload(server: &Server, tag: &str, files: &[PathBuf], extra: &[&str]) -> Run {
    let api = server.api_url();
    let mut args = vec![
        "resources",
        "upload",
        "--version",
        tag,
        "--github-api",
        &api,
    ];
    args.extend_from_slice(extra);
    let files: Vec<&str> = files.iter().map(|f| f.to_str().unwrap()).collect();
    args.extend(files);
    xtask(&args, &[("GH_TOKEN", TOKEN)])
}

/// The names `DIR/*` expands to: the regular files not hidden.
pub fn shown(dir: &Path) -> Vec<String> {
    files_in(dir)
        .into_iter()
        .filter(|n| !n.starts_with('.'))
        .collect()
}

/// The files `upload DIR/*` would be given.
pub fn visible(dir: &Path) -> Vec<PathBuf> {
    shown(dir).into_iter().map(|n| dir.join(n)).collect()
}

/// `upload` of `files` is refused before anything is sent, saying `says`.
pub fn upload_refused(server: &Server, files: &[PathBuf], says: &[&str]) {
    let run = upload(server, "v1", files, &[]);
    run.failed();
    for s in says {
        assert!(
            run.stderr.contains(s),
            "{files:?}: no {s:?} in {}",
            run.stderr
        );
    }
    assert!(
        !server.requests().iter().any(|r| r.host == "uploads"),
        "{files:?}: something was sent"
    );
    assert!(server.assets_of("v1").is_empty());
}

/// An un-renamed set (a CI artifact's names) in `dir`: `parts` suffixes,
/// and the sums if `sums`.
pub fn artifact_set(dir: &Path, parts: &[&str], sums: bool) {
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

pub fn qemu_raw(img: &Path, out: &Path) -> Vec<u8> {
    let st = Command::new("qemu-img")
        .args(["convert", "-f", "qcow2", "-O", "raw"])
        .arg(img)
        .arg(out)
        .status()
        .unwrap();
    assert!(st.success());
    fs::read(out).unwrap()
}

pub fn held_names(server: &Server, tag: &str) -> Vec<String> {
    let held = server.assets_of(tag);
    assert!(held.iter().all(|(_, s, _)| s == "uploaded"), "{held:?}");
    let mut n: Vec<String> = held.into_iter().map(|(n, _, _)| n).collect();
    n.sort();
    n
}
