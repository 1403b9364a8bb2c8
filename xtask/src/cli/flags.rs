//! The one declaration of every flag of `cargo xtask resources`: its names,
//! its value, its help, exactly which steps take it (the full run is one),
//! and the help and default a step gives it where they differ. Parsing,
//! which steps accept a flag, each step's `--help` and the reference's flag
//! table (checked by a test) all come from here.

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
