//! The one declaration of every step of `cargo xtask resources` (its word,
//! its arguments, its summary and help text) and of every flag: its names,
//! its value, its help, exactly which steps take it (the full run is one),
//! and the help and default a step gives it where they differ. Parsing,
//! which steps accept a flag, each step's `--help` and the reference's flag
//! table (checked by a test) all come from here. A new step is declared
//! here, parsed into its command in `cli::command`, and run in its module
//! under `commands/`.

/// A step of `cargo xtask resources`; `Run` is the full run (no step named).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Cmd {
    Run,
    Download,
    Decompress,
    Convert,
    Verify,
    List,
    Mirror,
    Cache,
    Pack,
    Upload,
}
use Cmd::*;

impl Cmd {
    /// Every step, the full run first, then in help order.
    pub const ALL: [Cmd; 10] = [
        Run, Download, Decompress, Convert, Verify, List, Mirror, Cache, Pack, Upload,
    ];

    /// The word that names the step (`resources` for the full run).
    pub fn name(self) -> &'static str {
        match self {
            Run => "resources",
            Download => "download",
            Decompress => "decompress",
            Convert => "convert",
            Verify => "verify",
            List => "list",
            Mirror => "mirror",
            Cache => "cache",
            Pack => "pack",
            Upload => "upload",
        }
    }

    /// The step a word names (the full run has no word).
    pub fn from_word(word: &str) -> Option<Cmd> {
        Cmd::ALL[1..].iter().copied().find(|c| c.name() == word)
    }

    /// For messages: `the full run` or `` `verify` ``.
    pub fn label(self) -> String {
        match self {
            Run => "the full run".into(),
            c => format!("`{}`", c.name()),
        }
    }
}

/// What a step is: its arguments after the flags, its one-line summary and
/// the text of its `--help`.
pub struct StepDoc {
    pub cmd: Cmd,
    pub args: &'static str,
    pub summary: &'static str,
    pub text: &'static str,
}

/// The steps, in help order (the full run is described by the top help).
pub const STEPS: &[StepDoc] = &[
    StepDoc {
        cmd: Cmd::Download,
        args: "",
        summary: "fetch kernel, client, disk-image parts and sums",
        text: "\
Fetches the release's kernel and test client (installed as `kernel` and `client` in the
output directory once their digests check) and the disk-image parts and sums (kept in
the download cache, or with --no-cache in the hidden working directory
`.downloads/<tag>/`). Partial files are resumed.",
    },
    StepDoc {
        cmd: Cmd::Decompress,
        args: "",
        summary: "unpack the archive into disk-image.qcow2 and check it against the sums",
        text: "\
Unpacks the downloaded disk image (the parts read in order, their digests checked) into
`disk-image.qcow2` in the output directory and checks its sha256 against the release's
`.sums`. Run `download` first (with the same --repo, --github-api, --source, --no-cache).
With --from DIR, unpacks the parts and sums already in DIR instead (what `pack` wrote,
a CI artifact, another machine's copy): no network, no release needed. Parts are
found by their names (disk-image-<os>-<arch>.qcow2.tar.<gz|xz|zst>[.aa, .ab, ...]),
else DIR's one set of other names (a CI artifact's disk-image.qcow2.tar.gz.aa, ...).
With --from PREFIX, as `artifacts.sh decompress-split PREFIX` takes it, unpacks
PREFIX.tar.gz.aa, .ab, ... (or .tar.xz.*, .tar.zst.*, one PREFIX.tar.gz ...) checked
against PREFIX.sums, whatever the prefix is named (disktmp/disk-image.qcow2).",
    },
    StepDoc {
        cmd: Cmd::Convert,
        args: " [INPUT [OUTPUT]]",
        summary: "write the raw disk-image.img that gem5 reads from disk-image.qcow2",
        text: "\
Converts a qcow2 image to the raw, sparse image gem5 reads.
INPUT defaults to <output>/disk-image.qcow2, OUTPUT to <output>/disk-image.img.
INPUT and OUTPUT must be different files.",
    },
    StepDoc {
        cmd: Cmd::Verify,
        args: "",
        summary: "check the installed files (and with --version/--arch/--os-version, the set)",
        text: "\
Checks the files in the output directory against manifest.json: kernel and client are
ELF files of the right architecture, disk-image.qcow2 matches the release's sums,
disk-image.img has the qcow2's virtual size. One line per file; exit 0 when all hold.
With --version, --arch, --os-version or --repo, the installed set must also be that one
(read from the manifest); a difference is named and fails.",
    },
    StepDoc {
        cmd: Cmd::List,
        args: "",
        summary: "list the repository's (or a mirror's) releases and what each contains",
        text: "\
Lists the repository's releases, newest first, with what each contains for every
os/arch, then the documentation's support table. With --source DIR, the releases a
mirror directory holds; a mirror on a web server (--source URL) has no index, so only
the release its `latest` names is listed.",
    },
    StepDoc {
        cmd: Cmd::Mirror,
        args: "",
        summary: "copy a release's assets into a directory others can use as --source",
        text: "\
Stores a release's JSON and the assets of one os/arch set (or `--arch all`,
`--os-version all` for every set), each checked against its digest, as
MIRROR_DIR/<tag>/release.json + asset files, and MIRROR_DIR/latest naming the tag.
Other machines then run `cargo xtask resources --source MIRROR_DIR` (or serve
MIRROR_DIR with any static web server and pass its URL).",
    },
    StepDoc {
        cmd: Cmd::Cache,
        args: " list|path|prune",
        summary: "the download cache: `cache list`, `cache prune`, `cache path`",
        text: "\
The download cache keeps what runs downloaded (release JSON, kernel, client, disk parts,
exactly as published and checked), so another checkout, another CI job on this machine,
or switching back to a tag installs with no download. It lives in $VSWARM_CACHE_DIR,
else $XDG_CACHE_HOME/vswarm-u, else ~/.cache/vswarm-u.
    cache list     each cached release, its size and when it was last used
    cache path     print where the cache is
    cache prune    remove the least recently used releases beyond --keep N (default 3)
                   and then beyond --max-size SIZE (default 20G); a release another run
                   is using is left alone
After every run the default policy (3 releases, 20 GiB) is applied.",
    },
    StepDoc {
        cmd: Cmd::Pack,
        args: " DISK",
        summary: "make a qcow2 into release assets: tar, compressed on every core, split, sums",
        text: "\
Packs DISK, a qcow2, into the assets of a release in the output directory (default:
the current directory): disk-image-<os>-<arch>.qcow2.tar.gz.aa, .ab, ... (a tar with the
one member temp/disk-image.qcow2, compressed, split with split's suffixes), the .sums
file naming temp/disk-image.qcow2, and with --kernel/--client their copies. Old readers
(`cat parts | pigz -dc | tar x`, `sha256sum -c`, artifacts.py) read them unchanged; this
tool decodes them on every core. DISK must be a qcow2 that `convert` reads. An existing
set in the output directory is replaced only with --force (its old parts are removed).
Prints each asset and its size.",
    },
    StepDoc {
        cmd: Cmd::Upload,
        args: " (--version TAG | --release-id ID) FILES... [--as NAME]",
        summary: "upload files as assets of a release (needs GH_TOKEN or GITHUB_TOKEN)",
        text: "\
Uploads FILES as assets of the release tagged --version in --repo, or of the release
whose API id is --release-id (else $RELEASE_ID, as upstream's artifacts.sh; with
--version too, the id's release must carry that tag). With --as NAME, the one FILE
is uploaded as NAME (gh's FILE#LABEL sets a label, not a name: `#` is not used).
An asset already there with the same size and digest is skipped, so re-running a cut
upload completes it; a same-named asset with other content is an error unless --clobber.
Without a release for the tag, --create makes one (a published pre-release; with
--draft, a draft). The token comes from GH_TOKEN, else GITHUB_TOKEN, and needs
`contents: write` on the repository.",
    },
];

/// One flag. `default` and `help` hold for every step in `steps` but those
/// `differs` names; a default is markdown, "" when there is none to show
/// (a switch is then off).
pub struct Flag {
    pub long: &'static str,
    pub short: Option<&'static str>,
    /// The value's placeholder; None: a switch.
    pub value: Option<&'static str>,
    pub help: &'static str,
    pub default: &'static str,
    /// More for the reference only (the help stays one line); read by the
    /// test that writes the reference's flag table.
    #[cfg_attr(not(test), allow(dead_code))]
    pub more: &'static str,
    /// Exactly the steps that take it.
    pub steps: &'static [Cmd],
    pub differs: &'static [At],
}

/// What one step says differently about a flag.
pub struct At {
    pub step: Cmd,
    pub help: Option<&'static str>,
    /// `Some("")`: this step has no default (the flag is required or optional).
    pub default: Option<&'static str>,
}

impl Flag {
    pub fn takes(&self, c: Cmd) -> bool {
        self.steps.contains(&c)
    }

    fn at(&self, c: Cmd) -> Option<&At> {
        self.differs.iter().find(|a| a.step == c)
    }

    pub fn help_at(&self, c: Cmd) -> &'static str {
        self.at(c).and_then(|a| a.help).unwrap_or(self.help)
    }

    pub fn default_at(&self, c: Cmd) -> &'static str {
        self.at(c).and_then(|a| a.default).unwrap_or(self.default)
    }

    /// Whether `word` is this flag, by either name.
    pub fn is(&self, word: &str) -> bool {
        self.long == word || self.short == Some(word)
    }
}

/// The flag `word` names (long or short), if any.
pub fn find(word: &str) -> Option<&'static Flag> {
    FLAGS.iter().find(|f| f.is(word))
}

const fn at(step: Cmd, help: Option<&'static str>, default: Option<&'static str>) -> At {
    At {
        step,
        help,
        default,
    }
}

/// The fields most flags leave alone (`..BASE`).
const BASE: Flag = Flag {
    long: "",
    short: None,
    value: None,
    help: "",
    default: "",
    more: "",
    steps: &[],
    differs: &[],
};

/// Every flag, by a name the parser reads it with, and [`FLAGS`] in help order.
macro_rules! declare {
    ($($name:ident = $flag:expr;)*) => {
        $(pub const $name: Flag = $flag;)*
        pub const FLAGS: &[Flag] = &[$($name),*];
    };
}

/// The default of what `verify` checks only when asked.
const NOT_CHECKED: Option<&str> = Some("any, not checked");

// The short forms are those of upstream's `artifacts.py`, so existing
// scripts keep working.
declare! {
VERSION = Flag {
    long: "--version",
    short: Some("-v"),
    value: Some("TAG"),
    help: "release tag, or `latest`",
    default: "`latest`",
    steps: &[Run, Download, Decompress, Verify, Mirror, Upload],
    differs: &[
        at(Decompress, Some("the downloaded release's tag, or `latest`"), Some("the last downloaded")),
        at(Verify, Some("the tag the installed set must have (`latest`: any tag)"), NOT_CHECKED),
        at(Upload, Some("the release's tag (not `latest`); required unless --release-id or \
                         `$RELEASE_ID` names the release"), Some("")),
    ],
    ..BASE
};
ARCH = Flag {
    long: "--arch",
    short: Some("-a"),
    value: Some("ARCH"),
    help: "`amd64` or `arm64`",
    default: "`amd64`",
    steps: &[Run, Download, Decompress, Verify, Mirror, Pack],
    differs: &[
        at(Verify, Some("the architecture the installed set must have"), NOT_CHECKED),
        at(Mirror, Some("`amd64`, `arm64` or `all`"), None),
        at(Pack, Some("the architecture the assets are named for"), None),
    ],
    ..BASE
};
OS_VERSION = Flag {
    long: "--os-version",
    short: Some("-l"),
    value: Some("OS"),
    help: "`focal` or `jammy`",
    default: "`focal`",
    steps: &[Run, Download, Decompress, Verify, Mirror, Pack],
    differs: &[
        at(Verify, Some("the OS the installed set must be for"), NOT_CHECKED),
        at(Mirror, Some("`focal`, `jammy` or `all`"), None),
        at(Pack, Some("the OS the assets are named for"), None),
    ],
    ..BASE
};
OUTPUT = Flag {
    long: "--output",
    short: Some("-o"),
    value: Some("DIR"),
    help: "where resources go",
    default: "`$RESOURCES`, else the repository's `resources/`",
    more: "the repository is found from the xtask's own location, never from the current \
           directory; not empty",
    steps: &[Run, Download, Decompress, Convert, Verify, Mirror, Pack],
    differs: &[
        at(Convert, Some("where the installed images are (INPUT's and OUTPUT's default place)"), None),
        at(Verify, Some("where the installed set is"), None),
        at(Mirror, Some("the mirror directory to fill"), None),
        at(Pack, Some("where the assets go"), Some("the current directory")),
    ],
};
REPO = Flag {
    long: "--repo",
    value: Some("OWNER/NAME"),
    help: "GitHub repository",
    default: "`vhive-serverless/vSwarm-u`",
    steps: &[Run, Download, Decompress, Verify, List, Mirror, Upload],
    differs: &[
        at(Decompress, Some("the repository the release was downloaded from (its cache entry)"), None),
        at(Verify, Some("the repository the installed set must come from"), NOT_CHECKED),
    ],
    ..BASE
};
GITHUB_API = Flag {
    long: "--github-api",
    value: Some("URL"),
    help: "API base",
    default: "`$GITHUB_API_URL`, else `https://api.github.com`",
    steps: &[Run, Download, Decompress, List, Mirror, Upload],
    differs: &[
        at(Decompress, Some("the API the release was downloaded from (its cache entry)"), None),
    ],
    ..BASE
};
JOBS = Flag {
    long: "--jobs",
    value: Some("N"),
    help: "parallel connections, 1 to 16",
    default: "16",
    more: "more is impolite to one host; 16 measured fastest on a capped network and costs \
           nothing on a fast one (see Performance)",
    steps: &[Run, Download, Mirror],
    ..BASE
};
KEEP_DOWNLOADS = Flag {
    long: "--keep-downloads",
    help: "keep the working directory `.downloads/<tag>/` (with --no-cache, the parts in it) \
           after the image is checked",
    more: "with the cache the parts stay there anyway",
    steps: &[Run],
    ..BASE
};
FORCE = Flag {
    long: "--force",
    help: "download and check everything again, replacing installed files even if changed",
    steps: &[Run, Download, Decompress, Convert, Pack],
    differs: &[
        at(Download, Some("download and check everything again, replacing a kernel or client \
                           even if changed"), None),
        at(Decompress, Some("unpack again, replacing a `disk-image.qcow2` even if changed"), None),
        at(Convert, Some("replace a `disk-image.img` even if changed"), None),
        at(Pack, Some("replace an existing set of assets in the output directory"), None),
    ],
    more: "`pack --force`: the old set's sums and every archive or part of that os/arch (by the \
           exact names `pack` and `split` write, in any compression) are replaced or removed; \
           other files are left alone, and DISK, --kernel or --client inside the old set is \
           refused",
    ..BASE
};
SOURCE = Flag {
    long: "--source",
    value: Some("DIR|URL"),
    help: "read releases from a mirror made by `mirror` instead of GitHub",
    default: "`$VSWARM_RESOURCES_SOURCE`",
    steps: &[Run, Download, Decompress, List, Mirror],
    differs: &[
        at(Decompress, Some("the mirror the release was downloaded from (its cache entry)"), None),
        at(List, Some("list a mirror's releases (a URL mirror has no index: the one its \
                       `latest` names)"), None),
        at(Mirror, Some("copy from a mirror instead of GitHub"), None),
    ],
    ..BASE
};
NO_CACHE = Flag {
    long: "--no-cache",
    help: "neither read nor fill the download cache (see `cache path`)",
    steps: &[Run, Download, Decompress],
    differs: &[
        at(Decompress, Some("read the parts from the working directory only, not the cache"), None),
    ],
    ..BASE
};
OFFLINE = Flag {
    long: "--offline",
    help: "no network: the release and its assets from the cache only (`latest`: the newest \
           cached)",
    steps: &[Run, Download],
    ..BASE
};
NO_RAW = Flag {
    long: "--no-raw",
    help: "do not make `disk-image.img` (QEMU reads the qcow2; gem5 needs the raw image)",
    steps: &[Run],
    ..BASE
};
NO_WAIT = Flag {
    long: "--no-wait",
    help: "fail at once when another run holds the output directory or cache entry",
    default: "wait",
    steps: &[Run, Download, Decompress, Mirror, Pack],
    differs: &[
        at(Mirror, Some("fail at once when another run holds the mirror directory"), None),
        at(Pack, Some("fail at once when another run holds the output directory"), None),
    ],
    ..BASE
};
JSON = Flag {
    long: "--json",
    help: "print one JSON document on stdout at the end (schema 1); messages stay on stderr",
    steps: &Cmd::ALL,
    ..BASE
};
QUIET = Flag {
    long: "--quiet",
    short: Some("-q"),
    help: "only errors on stderr; nothing on stdout but --json's document",
    steps: &Cmd::ALL,
    ..BASE
};
KEEP = Flag {
    long: "--keep",
    value: Some("N"),
    help: "`cache prune`: keep the N most recently used releases",
    default: "3",
    steps: &[Cache],
    ..BASE
};
MAX_SIZE = Flag {
    long: "--max-size",
    value: Some("SIZE"),
    help: "`cache prune`: then remove the least recently used until at most SIZE",
    default: "`20G`",
    steps: &[Cache],
    ..BASE
};
WITH_QEMU_IMG = Flag {
    long: "--with-qemu-img",
    help: "use `qemu-img convert -O raw` instead of the built-in converter",
    more: "kept as an escape hatch for images the built-in converter refuses (encrypted, with \
           a backing file or an external data file), and to cross-check its output against \
           QEMU's own; needs `qemu-img` on PATH",
    steps: &[Convert],
    ..BASE
};
NO_SPARSE_DETECT = Flag {
    long: "--no-sparse-detect",
    help: "do not look for zero blocks inside allocated clusters (faster, larger output)",
    steps: &[Convert],
    ..BASE
};
DEEP = Flag {
    long: "--deep",
    help: "also compare `disk-image.img`'s content with the qcow2's guest content",
    steps: &[Verify],
    ..BASE
};
QUICK = Flag {
    long: "--quick",
    help: "compare sizes and modification times with the manifest only",
    steps: &[Verify],
    ..BASE
};
FROM = Flag {
    long: "--from",
    value: Some("DIR|PREFIX"),
    help: "unpack the parts and sums in DIR, or at PREFIX (DIR/disk-image.qcow2), no network",
    more: "instead of a download; PREFIX as `artifacts.sh decompress-split` reads it \
           (`disktmp/disk-image.qcow2`)",
    steps: &[Decompress],
    ..BASE
};
COMPRESSION = Flag {
    long: "--compression",
    value: Some("gz|xz|zst"),
    help: "archive compression",
    default: "`gz`",
    more: "gzip as independent members that record their size (Mgzip), xz as blocks with \
           sizes (as `xz -T0`), zstd as independent frames",
    steps: &[Pack],
    ..BASE
};
PART_SIZE = Flag {
    long: "--part-size",
    value: Some("SIZE"),
    help: "bytes per part, with K, M or G (binary, as `split -b`), below 2G",
    default: "`500M`",
    more: "also `KiB`…, `KB`, `MB`, `GB` (1000-based) or `b` (512), exactly as GNU `split -b` \
           reads them (what it refuses, such as `1Mb`, is a usage error); below 2 GiB \
           (GitHub's asset limit); at most 650 parts",
    steps: &[Pack],
    ..BASE
};
LEVEL = Flag {
    long: "--level",
    value: Some("N"),
    help: "compression level: gz 1-12, xz 0-9, zst 1-19",
    default: "gz 6, xz 6, zst 3",
    steps: &[Pack],
    ..BASE
};
KERNEL = Flag {
    long: "--kernel",
    value: Some("FILE"),
    help: "also ship FILE as `vmlinux-<os>-<arch>` (a 64-bit little-endian ELF of --arch)",
    steps: &[Pack],
    ..BASE
};
CLIENT = Flag {
    long: "--client",
    value: Some("FILE"),
    help: "also ship FILE as `test-client-<arch>` (a 64-bit little-endian ELF of --arch)",
    steps: &[Pack],
    ..BASE
};
RELEASE_ID = Flag {
    long: "--release-id",
    value: Some("ID"),
    help: "the release by its numeric API id instead of --version",
    default: "`$RELEASE_ID`",
    more: "what softprops/action-gh-release outputs as `id`; a number above 0, else a usage \
           error",
    steps: &[Upload],
    ..BASE
};
AS = Flag {
    long: "--as",
    value: Some("NAME"),
    help: "upload the one FILE as the asset NAME (letters, digits, `. _ - +`)",
    default: "the file's name",
    steps: &[Upload],
    ..BASE
};
CREATE = Flag {
    long: "--create",
    help: "create the release if the tag has none (a published pre-release, as upstream's \
           release workflow makes)",
    steps: &[Upload],
    ..BASE
};
DRAFT = Flag {
    long: "--draft",
    help: "with --create: create it as a draft (hidden until published)",
    steps: &[Upload],
    ..BASE
};
CLOBBER = Flag {
    long: "--clobber",
    help: "replace a same-named asset whose content differs (without it, an error naming it)",
    steps: &[Upload],
    ..BASE
};
HELP = Flag {
    long: "--help",
    short: Some("-h"),
    help: "print this help",
    steps: &Cmd::ALL,
    ..BASE
};
}
