//! Asset selection: which assets of a release make up one os/arch set, chosen
//! by exact name (never by substring), with the disk-image parts put in the
//! order GNU `split` named them and checked for gaps.

use anyhow::{bail, Result};

use std::fmt;

use super::release::{Asset, Release};
use archive::unpack::Compression;
use util::fmt::human_bytes;
use util::text::Shown;

/// The machine architecture a set is built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Arch {
    /// x86-64.
    Amd64,
    /// AArch64.
    Arm64,
}

/// The Ubuntu release of the disk image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Os {
    /// Ubuntu 20.04.
    Focal,
    /// Ubuntu 22.04.
    Jammy,
}

impl Arch {
    /// Every architecture, in the order listed.
    pub const ALL: [Arch; 2] = [Arch::Amd64, Arch::Arm64];
    /// The architecture named `s` (`amd64`, `arm64`); an error lists the names.
    pub fn parse(s: &str) -> Result<Arch> {
        match s {
            "amd64" => Ok(Arch::Amd64),
            "arm64" => Ok(Arch::Arm64),
            _ => bail!(
                "invalid --arch `{}`: expected amd64 or arm64",
                util::text::clean(s, 40)
            ),
        }
    }
    /// The name assets and flags use.
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }
}

impl Os {
    /// Every Ubuntu release, in the order listed.
    pub const ALL: [Os; 2] = [Os::Focal, Os::Jammy];
    /// The release named `s` (`focal`, `jammy`); an error lists the names.
    pub fn parse(s: &str) -> Result<Os> {
        match s {
            "focal" => Ok(Os::Focal),
            "jammy" => Ok(Os::Jammy),
            _ => bail!(
                "invalid --os-version `{}`: expected focal or jammy",
                util::text::clean(s, 40)
            ),
        }
    }
    /// The name assets and flags use.
    pub fn as_str(self) -> &'static str {
        match self {
            Os::Focal => "focal",
            Os::Jammy => "jammy",
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Os {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// No single asset is larger: GitHub caps assets at 2 GiB, and a mirror's
/// whole uncompressed image of a 16 GiB disk is well under this.
pub(crate) const MAX_ASSET: u64 = 256 << 30;
/// A checksum file is a line or two; a larger one is not a checksum file.
pub const MAX_SUMS: u64 = 1 << 20;

/// How the disk image is shipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskForm {
    /// `.qcow2.tar.gz.aa…`, `.qcow2.tar.xz.aa…`
    SplitTar,
    /// `.qcow2.tar.gz`, `.qcow2.tar.xz`
    Tar,
    /// `.qcow2.gz`, `.qcow2.xz`, `.qcow2`
    Qcow2,
}

/// The assets of one os/arch set.
#[derive(Clone, Debug)]
pub struct Selection {
    /// The kernel.
    pub kernel: Asset,
    /// The test client.
    pub client: Asset,
    /// In archive order: concatenated, they are the disk archive.
    pub disk: Vec<Asset>,
    /// What form the disk comes in.
    pub disk_form: DiskForm,
    /// The archive's name without any split suffix.
    pub disk_archive: String,
    /// The sums file that gives the image's sha256.
    pub sums: Asset,
}

impl Selection {
    /// Bytes of every asset together.
    pub fn total_size(&self) -> u64 {
        self.all().map(|a| a.size).sum()
    }

    /// Every asset, in download order: small ones first, then the disk in
    /// archive order so its beginning completes first.
    pub fn all(&self) -> impl Iterator<Item = &Asset> {
        [&self.kernel, &self.client, &self.sums]
            .into_iter()
            .chain(self.disk.iter())
    }
}

/// The kernel's asset name: `vmlinux-OS-ARCH`.
pub fn kernel_name(os: Os, arch: Arch) -> String {
    format!("vmlinux-{os}-{arch}")
}
/// The test client's asset name: `test-client-ARCH`.
pub fn client_name(arch: Arch) -> String {
    format!("test-client-{arch}")
}
/// The disk image's base name: `disk-image-OS-ARCH.qcow2`.
pub fn disk_base(os: Os, arch: Arch) -> String {
    format!("disk-image-{os}-{arch}.qcow2")
}
/// `disk-image-focal-amd64.qcow2.tar.gz` → `disk-image-focal-amd64.qcow2`.
pub fn disk_base_of(archive: &str) -> String {
    match archive.find(".qcow2") {
        Some(i) => archive[..i + ".qcow2".len()].to_string(),
        None => archive.to_string(),
    }
}
/// The sums file's asset name: `BASE.sums`.
pub fn sums_name(os: Os, arch: Arch) -> String {
    format!("{}.sums", disk_base(os, arch))
}

/// An asset name we could use as a file name: no path separators, no `..`,
/// nothing hidden, no control characters. Any release listing another name
/// is refused whole: its JSON is not what GitHub would send.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && !name.contains("..")
        && name
            .chars()
            .all(|c| !c.is_control() && c != '/' && c != '\\');
    if !ok {
        bail!(
            "the release lists an asset with an unsafe name `{}`; refusing to use it as a file name",
            Shown(name)
        );
    }
    Ok(())
}

/// An asset's size is believable: at most [`MAX_ASSET`] (the sums file at
/// most [`MAX_SUMS`]). Sizes come from the server and drive allocations,
/// free-space checks and progress totals.
fn check_size(a: &Asset, max: u64) -> Result<()> {
    if a.size > max {
        bail!(
            "asset {}: the release says it is {} bytes ({}), more than the {} any asset of \
             this kind can be; the release is bogus, choose another --version",
            Shown(&a.name),
            a.size,
            human_bytes(a.size),
            human_bytes(max)
        );
    }
    Ok(())
}

/// The short names of the parts of an os/arch set the release lacks, or
/// None when it has them all (it may still be unusable for another reason).
pub fn missing(release: &Release, os: Os, arch: Arch) -> Option<Vec<&'static str>> {
    let has = |name: &str| usable(release).any(|a| a.name == name);
    let base = disk_base(os, arch);
    let mut out = Vec::new();
    if !has(&kernel_name(os, arch)) {
        out.push("kernel");
    }
    if !has(&client_name(arch)) {
        out.push("client");
    }
    if !has(&sums_name(os, arch)) {
        out.push("sums");
    }
    if !usable(release).any(|a| a.name.starts_with(&base) && a.name != sums_name(os, arch)) {
        out.push("disk");
    }
    (!out.is_empty()).then_some(out)
}

/// The assets a client may use: those fully uploaded. GitHub leaves an
/// asset whose upload failed in state `starter`; older JSON has no state.
fn usable(release: &Release) -> impl Iterator<Item = &Asset> {
    release
        .assets
        .iter()
        .filter(|a| a.state.as_deref().is_none_or(|s| s == "uploaded"))
}

/// Position of a GNU split suffix in split's own sequence: aa…yz (650 names),
/// then zaaa…zyzz, then zzaaaa…, each group two letters longer.
pub fn split_suffix_index(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() < 2
        || !b.len().is_multiple_of(2)
        || b.len() > 16
        || !b.iter().all(u8::is_ascii_lowercase)
    {
        return None;
    }
    let k = (b.len() - 2) / 2;
    if b[..k].iter().any(|&c| c != b'z') || b[k] == b'z' {
        return None;
    }
    // Groups before this one: 25·26^(j+1) names each.
    let mut base = 0u64;
    for j in 0..k {
        base += 25 * 26u64.pow(j as u32 + 1);
    }
    let rank = b[k..]
        .iter()
        .fold(0u64, |acc, &c| acc * 26 + u64::from(c - b'a'));
    Some(base + rank)
}

/// The suffix split gives the file at `index` (inverse of [`split_suffix_index`]).
pub fn split_suffix(mut index: u64) -> String {
    let mut k = 0u32;
    loop {
        let group = 25 * 26u64.pow(k + 1);
        if index < group {
            break;
        }
        index -= group;
        k += 1;
    }
    let len = k as usize + 2;
    let mut digits = vec![b'a'; len];
    for d in digits.iter_mut().rev() {
        *d = b'a' + (index % 26) as u8;
        index /= 26;
    }
    let mut s = "z".repeat(k as usize);
    s.push_str(std::str::from_utf8(&digits).expect("ascii"));
    s
}

/// Picks the os/arch set out of `release`.
pub fn select(release: &Release, os: Os, arch: Arch) -> Result<Selection> {
    for a in &release.assets {
        check_name(&a.name)?;
    }
    let find = |name: &str| usable(release).find(|a| a.name == name).cloned();
    let base = disk_base(os, arch);
    let mut missing = Vec::new();
    let kernel = find(&kernel_name(os, arch));
    if kernel.is_none() {
        missing.push(kernel_name(os, arch));
    }
    let client = find(&client_name(arch));
    if client.is_none() {
        missing.push(client_name(arch));
    }
    let sums = find(&sums_name(os, arch));
    if sums.is_none() {
        missing.push(sums_name(os, arch));
    }
    let disk = select_disk(
        release,
        &base,
        &format!("release {}", Shown(&release.tag_name)),
        "the release is incomplete, choose another --version",
    )?;
    if disk.is_none() {
        missing.push(format!(
            "{base}.tar.gz.aa (or another form of the disk image)"
        ));
    }
    match (kernel, client, sums, disk) {
        (Some(kernel), Some(client), Some(sums), Some((disk, disk_form, disk_archive))) => {
            let sel = Selection {
                kernel,
                client,
                disk,
                disk_form,
                disk_archive,
                sums,
            };
            check_size(&sel.sums, MAX_SUMS)?;
            let mut total = 0u64;
            for a in sel.all() {
                check_size(a, MAX_ASSET)?;
                total = total.checked_add(a.size).ok_or_else(|| {
                    anyhow::anyhow!("asset {}: the sizes add up past 2^64 bytes", Shown(&a.name))
                })?;
            }
            Ok(sel)
        }
        _ => {
            let have: Vec<String> = release
                .assets
                .iter()
                .take(40)
                .map(|a| util::text::clean(&a.name, 80))
                .collect();
            bail!(
                "release {} has no {} for {os}/{arch}; it contains: {}{}",
                Shown(&release.tag_name),
                missing.join(", "),
                if have.is_empty() {
                    "no assets".to_string()
                } else {
                    have.join(", ")
                },
                if release.assets.len() > 40 {
                    format!(" … and {} more", release.assets.len() - 40)
                } else {
                    String::new()
                }
            )
        }
    }
}

/// A disk archive: its parts in order, its form, its name.
pub type Disk = (Vec<Asset>, DiskForm, String);

/// The disk and the sums of the set of any `base` (`BASE.tar.gz.aa`…
/// and `BASE.sums`: a CI artifact's un-renamed `disk-image.qcow2`); `what`
/// ends the error that says which of the two is missing.
pub fn select_set(release: &Release, base: &str, what: &str, fix: &str) -> Result<(Disk, Asset)> {
    for a in &release.assets {
        check_name(&a.name)?;
    }
    let sums_name = format!("{base}.sums");
    let sums = usable(release).find(|a| a.name == sums_name).cloned();
    let label = format!("{}", Shown(&release.tag_name));
    match (select_disk(release, base, &label, fix)?, sums) {
        (Some(disk), Some(sums)) => Ok((disk, sums)),
        (disk, _) => bail!(
            "{} holds no {}{what}",
            Shown(&release.tag_name),
            if disk.is_none() {
                format!("{base}.tar.gz.aa (or another form of the disk image)")
            } else {
                sums_name
            }
        ),
    }
}

/// `tar.gz`, `tar.xz`, `tar.zst`, `tar`: the archive extensions, one for
/// each format the unpacker reads.
fn tar_exts() -> impl Iterator<Item = String> {
    Compression::readable().map(|c| match c.ext() {
        "" => "tar".to_string(),
        ext => format!("tar.{ext}"),
    })
}

/// The disk archive of `base` in `release`; a gap in its parts is an error
/// that names `label` (the release, or the directory) and says `fix`.
fn select_disk(release: &Release, base: &str, label: &str, fix: &str) -> Result<Option<Disk>> {
    for ext in tar_exts() {
        let archive = format!("{base}.{ext}");
        let prefix = format!("{archive}.");
        let mut parts: Vec<(u64, &Asset)> = usable(release)
            .filter_map(|a| {
                let suffix = a.name.strip_prefix(&prefix)?;
                // `x.tar.gz` is an archive of its own, not part `gz` of `x.tar`.
                if Compression::readable().any(|c| c.ext() == suffix) || suffix == "bz2" {
                    return None;
                }
                split_suffix_index(suffix).map(|i| (i, a))
            })
            .collect();
        if parts.is_empty() {
            continue;
        }
        parts.sort_by_key(|(i, _)| *i);
        for (want, (got, _)) in parts.iter().enumerate() {
            if *got != want as u64 {
                bail!(
                    "{label}: disk-image part {prefix}{} is missing (the parts go up to {}); {fix}",
                    split_suffix(want as u64),
                    parts.last().map(|(_, a)| a.name.as_str()).unwrap_or("")
                );
            }
        }
        let assets = parts.into_iter().map(|(_, a)| a.clone()).collect();
        return Ok(Some((assets, DiskForm::SplitTar, archive)));
    }
    let bare = Compression::readable()
        .map(Compression::ext)
        .filter(|e| !e.is_empty())
        .map(|e| (e.to_string(), DiskForm::Qcow2));
    let singles = tar_exts().map(|e| (e, DiskForm::Tar)).chain(bare);
    for (ext, form) in singles {
        let name = format!("{base}.{ext}");
        if let Some(a) = usable(release).find(|a| a.name == name) {
            return Ok(Some((vec![a.clone()], form, name)));
        }
    }
    if let Some(a) = usable(release).find(|a| a.name == base) {
        return Ok(Some((vec![a.clone()], DiskForm::Qcow2, base.to_string())));
    }
    Ok(None)
}

#[cfg(test)]
#[path = "assets_tests.rs"]
mod tests;
