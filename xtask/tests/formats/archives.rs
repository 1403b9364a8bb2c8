//! Integration tests for `archive::unpack` on real archives, built at test time
//! the way upstream's `artifacts.sh` builds them (GNU tar, gzip, split,
//! sha256sum), plus hostile tars built by hand.

use archive::unpack::*;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::{fs, io};

// ---------------------------------------------------------------------------
// helpers

/// A unique scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "unpack-test-{}-{}-{name}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("temp")).unwrap();
        Scratch(dir)
    }
    fn path(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }
    /// Where images are unpacked: a directory of its own, so tests can check
    /// that nothing but `dest` ever appears there.
    fn dest(&self) -> PathBuf {
        self.0.join("out").join("disk-image.qcow2")
    }
    fn sh(&self, script: &str) {
        let st = Command::new("bash")
            .arg("-euo")
            .arg("pipefail")
            .arg("-c")
            .arg(script)
            .current_dir(&self.0)
            .status()
            .unwrap();
        assert!(st.success(), "failed: {script}");
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Fast, deterministic "qcow2" bytes: the magic, some text, some zeros and
/// pseudo-random (incompressible) data, crossing several 1 MiB chunks.
fn image_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(b"QFI\xfb\0\0\0\x03");
    let mut x = seed | 1;
    while v.len() < len {
        let block = v.len() / 65536;
        match block % 3 {
            0 => v.extend_from_slice(b"vSwarm-u disk image text block, mostly compressible. "),
            1 => v.extend(std::iter::repeat_n(0u8, 4096)),
            _ => {
                for _ in 0..512 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    v.extend_from_slice(&x.to_le_bytes());
                }
            }
        }
    }
    v.truncate(len);
    v
}

/// Writes `temp/disk-image.qcow2` (3 MiB + a bit) and its upstream sums file.
fn make_image(s: &Scratch) -> Vec<u8> {
    let img = image_bytes(3 * 1024 * 1024 + 12345, 42);
    fs::write(s.path("temp/disk-image.qcow2"), &img).unwrap();
    s.sh("sha256sum temp/disk-image.qcow2 > temp/disk-image.qcow2.sums");
    img
}

/// Reads files one after another, like the pipeline's parts reader; can end
/// with an error (a part digest failure) and can dribble tiny reads.
struct Parts {
    files: Vec<PathBuf>,
    cur: Option<fs::File>,
    fail_at_eof: bool,
    max_read: usize,
}

impl Parts {
    fn new(files: Vec<PathBuf>) -> Parts {
        assert!(!files.is_empty());
        Parts {
            files,
            cur: None,
            fail_at_eof: false,
            max_read: usize::MAX,
        }
    }
    fn glob(dir: &Path, prefix: &str) -> Parts {
        let mut files: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
            .collect();
        files.sort();
        Parts::new(files)
    }
}

impl Read for Parts {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.cur.is_none() {
                if self.files.is_empty() {
                    if self.fail_at_eof {
                        return Err(io::Error::other("part .ab: SHA-256 mismatch (simulated)"));
                    }
                    return Ok(0);
                }
                self.cur = Some(fs::File::open(self.files.remove(0))?);
            }
            let n = buf.len().min(self.max_read);
            let k = self.cur.as_mut().unwrap().read(&mut buf[..n])?;
            if k > 0 || buf.is_empty() {
                return Ok(k);
            }
            self.cur = None;
        }
    }
}

fn sums_of(s: &Scratch) -> [u8; 32] {
    let text = fs::read_to_string(s.path("temp/disk-image.qcow2.sums")).unwrap();
    let entries = parse_sums(&text, "disk-image.qcow2.sums").unwrap();
    assert_eq!(entries[0].path, "temp/disk-image.qcow2");
    expected_sha256(&entries, "disk-image.qcow2", "disk-image.qcow2.sums").unwrap()
}

/// Only `dest` (if anything) may exist in its directory: no temp left over,
/// nothing extracted by member path.
fn only_dest(dest: &Path, present: bool) {
    let dir = dest.parent().unwrap();
    let names: Vec<String> = match fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    let want: Vec<String> = if present {
        vec![dest.file_name().unwrap().to_string_lossy().into_owned()]
    } else {
        Vec::new()
    };
    assert_eq!(names, want, "unexpected files in {}", dir.display());
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn unpack_file(input: &Path, dest: &Path, expected: Option<[u8; 32]>) -> anyhow::Result<Unpacked> {
    let src = input.file_name().unwrap().to_string_lossy().into_owned();
    unpack_qcow2(
        Parts::new(vec![input.to_path_buf()]),
        &src,
        dest,
        expected,
        &mut |_| Ok(()),
    )
}

/// A hand-made tar member header, bypassing the path checks real tools apply.
fn raw_header(name: &str, kind: tar::EntryType, size: u64, link: &str) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    {
        let old = h.as_old_mut();
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        old.linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_cksum();
    h
}

fn tar_of(members: &[(&str, tar::EntryType, &[u8], &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, data, link) in members {
        let h = raw_header(name, *kind, data.len() as u64, link);
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap()
}

fn assert_err_has(r: anyhow::Result<Unpacked>, needles: &[&str]) -> String {
    let msg = format!("{:#}", r.expect_err("expected an error"));
    eprintln!("error: {msg}");
    for n in needles {
        assert!(msg.contains(n), "error lacks {n:?}: {msg}");
    }
    msg
}

// ---------------------------------------------------------------------------
// formats

#[test]
fn gzip_split_parts_like_upstream() {
    let s = Scratch::new("gz-parts");
    let img = make_image(&s);
    s.sh("tar c temp/disk-image.qcow2 | gzip -c > tmp.tar.gz && \
         split -b 1m tmp.tar.gz disk-image-focal-amd64.qcow2.tar.gz.");
    let parts = Parts::glob(&s.0, "disk-image-focal-amd64.qcow2.tar.gz.");
    assert!(parts.files.len() >= 2, "want several parts");
    let expected = sums_of(&s);
    let dest = s.dest();
    let mut checked = None;
    let u = unpack_qcow2(
        parts,
        "disk-image-focal-amd64.qcow2.tar.gz.aa…",
        &dest,
        Some(expected),
        &mut |n| {
            checked = Some(n);
            Ok(())
        },
    )
    .unwrap();
    assert_eq!(checked, Some(img.len() as u64));
    assert_eq!(u.path, dest);
    assert_eq!(u.size, img.len() as u64);
    assert_eq!(u.sha256, expected);
    assert_eq!(u.member, "temp/disk-image.qcow2");
    assert_eq!(fs::read(&dest).unwrap(), img);
    only_dest(&dest, true);
}

#[test]
fn gzip_with_dribbling_reads() {
    let s = Scratch::new("gz-dribble");
    let img = make_image(&s);
    s.sh("tar c temp/disk-image.qcow2 | gzip -c > tmp.tar.gz");
    let mut parts = Parts::new(vec![s.path("tmp.tar.gz")]);
    parts.max_read = 3;
    let u = unpack_qcow2(
        parts,
        "tmp.tar.gz",
        &s.dest(),
        Some(sums_of(&s)),
        &mut |_| Ok(()),
    )
    .unwrap();
    assert_eq!(u.size, img.len() as u64);
    assert_eq!(fs::read(s.dest()).unwrap(), img);
}

#[test]
fn multi_member_gzip() {
    let s = Scratch::new("gz-multi");
    let img = make_image(&s);
    s.sh(
        "tar c temp/disk-image.qcow2 > t.tar && n=$(stat -c %s t.tar) && \
         head -c $((n/2)) t.tar | gzip -c > multi.tar.gz && \
         tail -c +$((n/2+1)) t.tar | gzip -c >> multi.tar.gz",
    );
    let u = unpack_file(&s.path("multi.tar.gz"), &s.dest(), Some(sums_of(&s))).unwrap();
    assert_eq!(u.size, img.len() as u64);
    assert_eq!(fs::read(s.dest()).unwrap(), img);
    only_dest(&s.dest(), true);
}

#[test]
fn xz_single_and_multi_stream() {
    let s = Scratch::new("xz");
    let img = make_image(&s);
    s.sh(
        "tar c temp/disk-image.qcow2 > t.tar && xz -0 -T1 -c t.tar > t.tar.xz && \
         n=$(stat -c %s t.tar) && head -c $((n/3)) t.tar | xz -0 -T1 -c > m.tar.xz && \
         tail -c +$((n/3+1)) t.tar | xz -0 -T1 -c >> m.tar.xz && \
         split -b 700k t.tar.xz disk-image-focal-amd64.qcow2.tar.xz.",
    );
    let expected = sums_of(&s);
    for f in ["t.tar.xz", "m.tar.xz"] {
        let u = unpack_file(&s.path(f), &s.dest(), Some(expected)).unwrap();
        assert_eq!(u.size, img.len() as u64, "{f}");
        assert_eq!(fs::read(s.dest()).unwrap(), img, "{f}");
        fs::remove_file(s.dest()).unwrap();
    }
    let parts = Parts::glob(&s.0, "disk-image-focal-amd64.qcow2.tar.xz.");
    unpack_qcow2(
        parts,
        "tar.xz parts",
        &s.dest(),
        Some(expected),
        &mut |_| Ok(()),
    )
    .unwrap();
    assert_eq!(fs::read(s.dest()).unwrap(), img);
    only_dest(&s.dest(), true);
}

#[test]
fn zstd_tar() {
    let s = Scratch::new("zstd");
    let img = make_image(&s);
    s.sh("tar c temp/disk-image.qcow2 | zstd -q -1 -c > t.tar.zst");
    let u = unpack_file(&s.path("t.tar.zst"), &s.dest(), Some(sums_of(&s))).unwrap();
    assert_eq!(u.size, img.len() as u64);
    assert_eq!(fs::read(s.dest()).unwrap(), img);
}

#[test]
fn uncompressed_tar() {
    let s = Scratch::new("tar");
    let img = make_image(&s);
    s.sh("tar c temp/disk-image.qcow2 > t.tar");
    unpack_file(&s.path("t.tar"), &s.dest(), Some(sums_of(&s))).unwrap();
    assert_eq!(fs::read(s.dest()).unwrap(), img);
}

#[test]
fn bare_qcow2_plain_gz_and_xz() {
    let s = Scratch::new("bare");
    let img = make_image(&s);
    s.sh("cd temp && gzip -c disk-image.qcow2 > ../i.qcow2.gz && \
         xz -0 -T1 -c disk-image.qcow2 > ../i.qcow2.xz && cp disk-image.qcow2 ../i.qcow2");
    let expected = sums_of(&s);
    for f in ["i.qcow2.gz", "i.qcow2.xz", "i.qcow2"] {
        let input = s.path(f);
        let hint = fs::metadata(&input).unwrap().len();
        let mut checked = None;
        let u = unpack_qcow2_hinted(
            Parts::new(vec![input]),
            Some(hint),
            f,
            &s.dest(),
            Some(expected),
            &mut |n| {
                checked = Some(n);
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(checked, Some(hint), "{f}");
        assert_eq!(u.member, "", "{f}");
        assert_eq!(u.size, img.len() as u64, "{f}");
        assert_eq!(fs::read(s.dest()).unwrap(), img, "{f}");
        only_dest(&s.dest(), true);
        fs::remove_file(s.dest()).unwrap();
    }
}

#[test]
fn real_qemu_image_in_pax_tar_with_long_name() {
    let s = Scratch::new("qemu");
    let have = Command::new("qemu-img")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let long = format!("temp/{}/disk-image.qcow2", "d".repeat(120));
    if have {
        s.sh(&format!(
            "qemu-img create -q -f qcow2 temp/disk-image.qcow2 64M && \
             qemu-io -c 'write -P 0x5a 0 1M' temp/disk-image.qcow2 >/dev/null && \
             mkdir -p $(dirname {long}) && cp temp/disk-image.qcow2 {long}"
        ));
    } else {
        eprintln!("qemu-img not found; using synthetic bytes");
        make_image(&s);
        s.sh(&format!(
            "mkdir -p $(dirname {long}) && cp temp/disk-image.qcow2 {long}"
        ));
    }
    let img = fs::read(s.path("temp/disk-image.qcow2")).unwrap();
    assert!(img.starts_with(b"QFI\xfb"));
    // GNU long name (default format) and PAX path record.
    s.sh(&format!(
        "tar c {long} | gzip -c > gnu.tar.gz && tar c --format=pax {long} | gzip -c > pax.tar.gz"
    ));
    for f in ["gnu.tar.gz", "pax.tar.gz"] {
        let u = unpack_file(&s.path(f), &s.dest(), None).unwrap();
        assert_eq!(u.member, long, "{f}");
        assert_eq!(fs::read(s.dest()).unwrap(), img, "{f}");
        only_dest(&s.dest(), true);
    }
}

#[test]
fn tar_without_end_blocks_is_accepted() {
    let img = image_bytes(5000, 7);
    let mut t = tar_of(&[("disk-image.qcow2", tar::EntryType::Regular, &img, "")]);
    t.truncate(512 + 5120); // header + padded data, no end-of-archive
    let s = Scratch::new("noend");
    fs::write(s.path("t.tar.gz"), gzip(&t)).unwrap();
    let u = unpack_file(&s.path("t.tar.gz"), &s.dest(), None).unwrap();
    assert_eq!(u.size, 5000);
    assert_eq!(fs::read(s.dest()).unwrap(), img);
}

// ---------------------------------------------------------------------------
// failures leave nothing behind

#[test]
fn sums_mismatch_keeps_older_dest() {
    let s = Scratch::new("mismatch");
    make_image(&s);
    s.sh("tar c temp/disk-image.qcow2 | gzip -c > t.tar.gz");
    let dest = s.dest();
    fs::create_dir_all(dest.parent().unwrap()).unwrap();
    fs::write(&dest, b"older image, must survive").unwrap();
    let right = sums_of(&s);
    let mut wrong = right;
    wrong[0] ^= 0xff;
    let msg = assert_err_has(
        unpack_file(&s.path("t.tar.gz"), &dest, Some(wrong)),
        &["t.tar.gz", &util::fmt::hex(&right), &util::fmt::hex(&wrong)],
    );
    assert!(msg.contains("--force"), "{msg}");
    assert_eq!(fs::read(&dest).unwrap(), b"older image, must survive");
    only_dest(&dest, true);
}

#[test]
fn truncated_downloads() {
    let s = Scratch::new("trunc");
    make_image(&s);
    s.sh(
        "tar c temp/disk-image.qcow2 > t.tar && gzip -c t.tar > t.tar.gz && \
         xz -0 -T1 -c t.tar > t.tar.xz && \
         head -c $(( $(stat -c %s t.tar.gz) / 2 )) t.tar.gz > cut.tar.gz && \
         head -c $(( $(stat -c %s t.tar.xz) / 2 )) t.tar.xz > cut.tar.xz && \
         head -c 2000000 t.tar > cut.tar",
    );
    assert_err_has(
        unpack_file(&s.path("cut.tar.gz"), &s.dest(), None),
        &["cut.tar.gz", "gzip", "truncated", "--force"],
    );
    assert_err_has(
        unpack_file(&s.path("cut.tar.xz"), &s.dest(), None),
        &["cut.tar.xz", "xz", "truncated"],
    );
    assert_err_has(
        unpack_file(&s.path("cut.tar"), &s.dest(), None),
        &["cut.tar", "truncated", "temp/disk-image.qcow2"],
    );
    only_dest(&s.dest(), false);
}

#[test]
fn corrupt_gzip_and_xz() {
    let s = Scratch::new("corrupt");
    make_image(&s);
    s.sh("tar c temp/disk-image.qcow2 > t.tar && gzip -c t.tar > t.tar.gz && xz -0 -T1 -c t.tar > t.tar.xz");
    for (f, kind) in [("t.tar.gz", "gzip"), ("t.tar.xz", "xz")] {
        let mut data = fs::read(s.path(f)).unwrap();
        let mid = data.len() / 2;
        for b in &mut data[mid..mid + 16] {
            *b ^= 0x55;
        }
        let bad = format!("bad-{f}");
        fs::write(s.path(&bad), &data).unwrap();
        assert_err_has(
            unpack_file(&s.path(&bad), &s.dest(), None),
            &[&bad, kind, "corrupt", "--force"],
        );
        only_dest(&s.dest(), false);
    }
}

#[test]
fn tar_without_qcow2() {
    let s = Scratch::new("noqcow2");
    let t = tar_of(&[
        ("temp/", tar::EntryType::Directory, b"", ""),
        ("temp/readme.txt", tar::EntryType::Regular, b"hello", ""),
    ]);
    fs::write(s.path("t.tar.gz"), gzip(&t)).unwrap();
    assert_err_has(
        unpack_file(&s.path("t.tar.gz"), &s.dest(), None),
        &["t.tar.gz", "no .qcow2", "temp/readme.txt"],
    );
    only_dest(&s.dest(), false);
}

#[test]
fn tar_with_two_qcow2() {
    let s = Scratch::new("two");
    let a = image_bytes(3 << 20, 1);
    let t = tar_of(&[
        ("a.qcow2", tar::EntryType::Regular, &a, ""),
        ("b.qcow2", tar::EntryType::Regular, b"QFI\xfbsecond", ""),
    ]);
    fs::write(s.path("t.tar.gz"), gzip(&t)).unwrap();
    assert_err_has(
        unpack_file(&s.path("t.tar.gz"), &s.dest(), None),
        &["t.tar.gz", "more than one", "a.qcow2", "b.qcow2"],
    );
    only_dest(&s.dest(), false);
}

#[test]
fn hostile_members_are_never_written() {
    let s = Scratch::new("hostile");
    let img = image_bytes(10000, 3);
    let cases: Vec<(&str, tar::EntryType, &str)> = vec![
        ("../evil.qcow2", tar::EntryType::Regular, ""),
        ("temp/../../evil.qcow2", tar::EntryType::Regular, ""),
        ("/tmp/abs-evil.qcow2", tar::EntryType::Regular, ""),
        ("x.qcow2", tar::EntryType::Symlink, "/etc/passwd"),
        ("y.qcow2", tar::EntryType::Link, "../evil.qcow2"),
        ("dev.qcow2", tar::EntryType::Char, ""),
        ("fifo.qcow2", tar::EntryType::Fifo, ""),
    ];
    for (name, kind, link) in &cases {
        let data: &[u8] = if *kind == tar::EntryType::Regular {
            &img
        } else {
            b""
        };
        let t = tar_of(&[(name, *kind, data, link)]);
        fs::write(s.path("t.tar.gz"), gzip(&t)).unwrap();
        assert_err_has(
            unpack_file(&s.path("t.tar.gz"), &s.dest(), None),
            &["t.tar.gz", name, "no usable qcow2"],
        );
        only_dest(&s.dest(), false);
    }
    // Mixed with a good member: only the good one lands, at `dest`.
    let mut members: Vec<(&str, tar::EntryType, &[u8], &str)> = cases
        .iter()
        .map(|(n, k, l)| {
            let d: &[u8] = if *k == tar::EntryType::Regular {
                b"evil"
            } else {
                b""
            };
            (*n, *k, d, *l)
        })
        .collect();
    members.push(("temp/disk-image.qcow2", tar::EntryType::Regular, &img, ""));
    let t = tar_of(&members);
    fs::write(s.path("t.tar.gz"), gzip(&t)).unwrap();
    let u = unpack_file(&s.path("t.tar.gz"), &s.dest(), None).unwrap();
    assert_eq!(u.member, "temp/disk-image.qcow2");
    assert_eq!(fs::read(s.dest()).unwrap(), img);
    only_dest(&s.dest(), true);
    assert!(!s.0.join("evil.qcow2").exists());
    assert!(!s.0.parent().unwrap().join("evil.qcow2").exists());
    assert!(!Path::new("/tmp/abs-evil.qcow2").exists());
    assert!(!s.path("out/x.qcow2").exists());
}

#[test]
fn space_check_error_stops_before_writing() {
    let s = Scratch::new("space");
    let img = make_image(&s);
    s.sh("tar c temp/disk-image.qcow2 | gzip -c > t.tar.gz");
    let dest = s.dest();
    let partial = util::fs::partial_path(&dest);
    let mut asked = 0;
    let r = unpack_qcow2(
        Parts::new(vec![s.path("t.tar.gz")]),
        "t.tar.gz",
        &dest,
        None,
        &mut |n| {
            asked = n;
            assert!(
                !partial.exists(),
                "temp file created before the space check"
            );
            anyhow::bail!("not enough free space (simulated)")
        },
    );
    assert_err_has(r, &["not enough free space (simulated)"]);
    assert_eq!(asked, img.len() as u64);
    assert!(!partial.exists());
    only_dest(&dest, false);
}

#[test]
fn input_error_at_eof_fails_the_unpack() {
    let s = Scratch::new("ioerr");
    make_image(&s);
    s.sh("tar c temp/disk-image.qcow2 > t.tar && gzip -c t.tar > t.tar.gz");
    for f in ["t.tar.gz", "t.tar"] {
        let mut parts = Parts::new(vec![s.path(f)]);
        parts.fail_at_eof = true;
        let r = unpack_qcow2(parts, f, &s.dest(), Some(sums_of(&s)), &mut |_| Ok(()));
        let msg = assert_err_has(r, &[f, "SHA-256 mismatch (simulated)"]);
        assert!(!msg.contains("corrupt"), "blamed the data: {msg}");
        only_dest(&s.dest(), false);
    }
}

#[test]
fn not_an_image() {
    let s = Scratch::new("garbage");
    fs::write(s.path("empty"), b"").unwrap();
    fs::write(
        s.path("page.html"),
        b"<!DOCTYPE html><html><body>Not Found</body></html>".repeat(20),
    )
    .unwrap();
    fs::write(s.path("page.gz"), gzip(b"<html>rate limited</html>")).unwrap();
    fs::write(s.path("bz"), b"BZh91AY&SY").unwrap();
    assert_err_has(unpack_file(&s.path("empty"), &s.dest(), None), &["empty"]);
    assert_err_has(
        unpack_file(&s.path("page.html"), &s.dest(), None),
        &["page.html", "neither a tar archive nor a qcow2", "HTML"],
    );
    assert_err_has(
        unpack_file(&s.path("page.gz"), &s.dest(), None),
        &["gzip-decompressed content of page.gz", "neither"],
    );
    assert_err_has(unpack_file(&s.path("bz"), &s.dest(), None), &["bzip2"]);
    let empty_tar = gzip(&[0u8; 10240]);
    fs::write(s.path("empty.tar.gz"), empty_tar).unwrap();
    assert_err_has(
        unpack_file(&s.path("empty.tar.gz"), &s.dest(), None),
        &["empty tar archive"],
    );
    only_dest(&s.dest(), false);
}

#[test]
fn oversized_extension_header_is_refused_without_allocating() {
    // A GNU long-name header claiming 8 GiB: must fail fast, not allocate.
    let s = Scratch::new("longname");
    let mut h = tar::Header::new_gnu();
    h.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
    h.set_entry_type(tar::EntryType::GNULongName);
    h.set_size(8 << 30);
    h.set_cksum();
    let mut t = h.as_bytes().to_vec();
    t.extend_from_slice(&[b'a'; 4096]);
    fs::write(s.path("t.tar"), &t).unwrap();
    assert_err_has(
        unpack_file(&s.path("t.tar"), &s.dest(), None),
        &["t.tar", "extension header", "corrupt"],
    );
    only_dest(&s.dest(), false);
}

/// Throughput measurement on a big archive, not run by default:
/// `UNPACK_BENCH=/path/x.tar.gz cargo test --release -p xtask --test formats
/// -- --ignored --nocapture bench`. Writes next to the input, then removes it.
#[test]
#[ignore]
fn bench_unpack_from_env() {
    let Some(input) = std::env::var_os("UNPACK_BENCH").map(PathBuf::from) else {
        eprintln!("set UNPACK_BENCH to an archive");
        return;
    };
    let dest = input.with_file_name("bench-out").join("disk-image.qcow2");
    let in_len = fs::metadata(&input).unwrap().len();
    let t = std::time::Instant::now();
    let u = unpack_qcow2(
        io::BufReader::with_capacity(1 << 20, fs::File::open(&input).unwrap()),
        "bench",
        &dest,
        None,
        &mut |_| Ok(()),
    )
    .unwrap();
    let secs = t.elapsed().as_secs_f64();
    eprintln!(
        "unpacked {} MiB from {} MiB in {secs:.2} s: {:.0} MiB/s out, {:.0} MiB/s in; sha256 {}",
        u.size >> 20,
        in_len >> 20,
        u.size as f64 / secs / 1048576.0,
        in_len as f64 / secs / 1048576.0,
        util::fmt::hex(&u.sha256)
    );
    fs::remove_dir_all(dest.parent().unwrap()).unwrap();
}
