//! `cargo xtask resources decompress`: unpacks the downloaded disk image
//! (the parts read in order, their digests checked) into the working
//! directory, then installs it unless another set is installed. (`--from`,
//! a set on disk with no release, is a maintainer's path: `maintain::from`.)

use std::time::Instant;

use anyhow::Result;

use super::session::{report_image, staged_entry, Kept, Session, State, Verdict};
use super::Command;
use install::layout::QCOW2;
use install::swap::Move;
use util::fmt::hex;
use util::text::Shown;

/// `cargo xtask resources decompress` (without `--from`).
#[derive(Debug)]
pub(crate) struct DecompressArgs;

impl Command for DecompressArgs {
    fn run(self, s: &mut Session) -> Result<()> {
        s.open()?;
        s.load_manifest()?;
        s.plan_offline()?;
        if s.other_set().is_none() {
            s.refuse_pending()?;
            if adopt_image(s)? {
                return Ok(());
            }
        }
        let staged = s.plan().work.join(QCOW2);
        let started = Instant::now();
        let out = s.unpack_downloaded(&staged)?;
        s.plan().report_unpacked(&out, started);
        if let Some(o) = s.other_set() {
            note!(
                "{} {}/{} stays installed whole in {}; the image stays in the working directory",
                Shown(&o.tag),
                Shown(&o.os),
                Shown(&o.arch),
                s.out().display()
            );
            out!("{} is ready", staged.display());
            return Ok(());
        }
        let mut new = s.same_set_manifest();
        let sources = s.plan().disk_sources();
        new.set_entry(staged_entry(
            QCOW2,
            &staged,
            Some(hex(&out.sha256)),
            sources,
        )?);
        s.install(new, vec![(QCOW2, Move::Rename(staged))])?;
        let dest = s.out().join(QCOW2);
        out!("{} is ready", dest.display());
        report_image(&dest, &out.sha256);
        Ok(())
    }
}

/// An image at `disk-image.qcow2` that the manifest does not list is
/// compared with the sums: the release's is adopted (true: nothing to
/// unpack), another is the user's and refused unless `--force`.
fn adopt_image(s: &mut Session) -> Result<bool> {
    let state = s.inspect(QCOW2);
    let want = match state {
        State::Foreign(_) => Some(s.plan().expected_sha()?),
        _ => None,
    };
    let mut v = [(QCOW2, s.verdict(&state, QCOW2, want)?)];
    s.settle_users(&mut v)?;
    match v.into_iter().next().map(|(_, v)| v) {
        Some(Verdict::Keep(Kept::Adopted, e)) if !s.opts().force => {
            let mut new = s.same_set_manifest();
            new.set_entry(e);
            s.install(new, Vec::new())?;
            out!(
                "{} already is release {}'s image (adopted)",
                s.out().join(QCOW2).display(),
                s.plan().release.tag_name
            );
            Ok(true)
        }
        _ => Ok(false),
    }
}
