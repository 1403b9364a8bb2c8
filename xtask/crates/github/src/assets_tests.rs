//! Unit tests of asset selection: split order, names, sizes, forms.
use super::*;

fn asset(name: &str) -> Asset {
    Asset {
        id: None,
        name: name.into(),
        size: 1,
        browser_download_url: format!("https://x/{name}"),
        digest: None,
        state: None,
    }
}

fn release(names: &[&str]) -> Release {
    Release {
        id: None,
        upload_url: None,
        tag_name: "v1".into(),
        name: None,
        draft: false,
        prerelease: true,
        published_at: None,
        assets: names.iter().map(|n| asset(n)).collect(),
    }
}

#[test]
fn split_order_matches_gnu_split() {
    assert_eq!(split_suffix_index("aa"), Some(0));
    assert_eq!(split_suffix_index("az"), Some(25));
    assert_eq!(split_suffix_index("ba"), Some(26));
    assert_eq!(split_suffix_index("yz"), Some(649));
    assert_eq!(split_suffix_index("zaaa"), Some(650));
    assert_eq!(split_suffix_index("zyzz"), Some(650 + 16899));
    assert_eq!(split_suffix_index("zzaaaa"), Some(650 + 16900));
    for bad in ["", "a", "za", "zz", "aaa", "zzaa", "AA", "a1", "zzzzaa"] {
        assert_eq!(split_suffix_index(bad), None, "{bad}");
    }
    for i in [0, 1, 25, 26, 649, 650, 651, 17549, 17550, 20000] {
        assert_eq!(split_suffix_index(&split_suffix(i)), Some(i), "{i}");
    }
}

#[test]
fn selects_exact_names_in_split_order() {
    let r = release(&[
        "vmlinux-focal-amd64",
        "vmlinux-focal-amd64-debug",
        "test-client-amd64",
        "disk-image-focal-amd64.qcow2.tar.gz.ab",
        "disk-image-focal-amd64.qcow2.tar.gz.aa",
        "disk-image-focal-amd64.qcow2.tar.gz.ac",
        "disk-image-focal-amd64.qcow2.sums",
        "disk-image-focal-arm64.qcow2.tar.gz.aa",
    ]);
    let s = select(&r, Os::Focal, Arch::Amd64).unwrap();
    assert_eq!(s.kernel.name, "vmlinux-focal-amd64");
    let parts: Vec<_> = s.disk.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(
        parts,
        [
            "disk-image-focal-amd64.qcow2.tar.gz.aa",
            "disk-image-focal-amd64.qcow2.tar.gz.ab",
            "disk-image-focal-amd64.qcow2.tar.gz.ac"
        ]
    );
    assert_eq!(s.disk_form, DiskForm::SplitTar);
}

#[test]
fn gap_names_the_missing_part() {
    let r = release(&[
        "vmlinux-focal-amd64",
        "test-client-amd64",
        "disk-image-focal-amd64.qcow2.tar.gz.aa",
        "disk-image-focal-amd64.qcow2.tar.gz.ab",
        "disk-image-focal-amd64.qcow2.tar.gz.ad",
        "disk-image-focal-amd64.qcow2.sums",
    ]);
    let e = select(&r, Os::Focal, Arch::Amd64).unwrap_err().to_string();
    assert!(
        e.contains("disk-image-focal-amd64.qcow2.tar.gz.ac is missing"),
        "{e}"
    );
}

#[test]
fn missing_assets_list_the_release() {
    let r = release(&[
        "vmlinux-amd64",
        "test-client-amd64",
        "test-disk-image-amd64.tar.gz.aa",
    ]);
    let e = select(&r, Os::Focal, Arch::Amd64).unwrap_err().to_string();
    assert!(e.contains("no vmlinux-focal-amd64"), "{e}");
    assert!(
        e.contains("it contains: vmlinux-amd64, test-client-amd64"),
        "{e}"
    );
}

#[test]
fn unsafe_names_are_refused() {
    for bad in ["../x", "a/b", ".hidden", "a\\b", "x\ny", ""] {
        assert!(check_name(bad).is_err(), "{bad:?}");
    }
    let r = release(&["vmlinux-focal-amd64", "../../etc/passwd"]);
    assert!(select(&r, Os::Focal, Arch::Amd64).is_err());
}

#[test]
fn every_readable_format_is_selected() {
    for (name, form) in [
        (
            "disk-image-focal-amd64.qcow2.tar.zst.aa",
            DiskForm::SplitTar,
        ),
        ("disk-image-focal-amd64.qcow2.tar.zst", DiskForm::Tar),
        ("disk-image-focal-amd64.qcow2.zst", DiskForm::Qcow2),
        ("disk-image-focal-amd64.qcow2.tar", DiskForm::Tar),
        ("disk-image-focal-amd64.qcow2.tar.aa", DiskForm::SplitTar),
        ("disk-image-focal-amd64.qcow2.tar.gz", DiskForm::Tar),
        ("disk-image-focal-amd64.qcow2.tar.xz", DiskForm::Tar),
    ] {
        let r = release(&[
            "vmlinux-focal-amd64",
            "test-client-amd64",
            name,
            "disk-image-focal-amd64.qcow2.sums",
        ]);
        let s = select(&r, Os::Focal, Arch::Amd64).unwrap();
        assert_eq!((s.disk[0].name.as_str(), s.disk_form), (name, form));
    }
}

#[test]
fn single_file_forms() {
    let r = release(&[
        "vmlinux-focal-amd64",
        "test-client-amd64",
        "disk-image-focal-amd64.qcow2.xz",
        "disk-image-focal-amd64.qcow2.sums",
    ]);
    let s = select(&r, Os::Focal, Arch::Amd64).unwrap();
    assert_eq!(s.disk_form, DiskForm::Qcow2);
    assert_eq!(s.disk[0].name, "disk-image-focal-amd64.qcow2.xz");
}
