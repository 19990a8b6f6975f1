//! Bad input to the `gradflow` binary: every case must fail with a non-zero exit code and a
//! message on stderr that names the file and the field and says what to do — never a panic — and
//! must leave nothing behind: no run directory and no hidden staging directory
//! (`.<name>.partial-*`) next to where the run would have gone. The one exception, by design, is a
//! run that diverges: its directory is kept with the metrics up to the divergence.

use crate::common::cli as support;

use std::path::{Path, PathBuf};
use support::*;

/// A small valid ball-data DNN config; the cases below break one thing in it.
const BASE: &str = "seed = 1
[data]
kind = \"ball\"
n = 10
d = 4
m = 2
[model]
preset = \"dnn\"
hidden = [8]
[train]
lr = 0.1
epochs = 20
";

/// A directory with the case's files in `cfg/` and an empty `runs/` for the output.
struct Case {
    tmp: TempDir,
    cfg_dir: PathBuf,
    runs: PathBuf,
}

impl Case {
    fn new(tag: &str) -> Self {
        let tmp = TempDir::new(&format!("bad-{tag}"));
        let cfg_dir = tmp.mkdir("cfg");
        let runs = tmp.mkdir("runs");
        Self { tmp, cfg_dir, runs }
    }
    fn file(&self, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
        self.tmp.write(Path::new("cfg").join(name), bytes)
    }
    fn out(&self) -> PathBuf {
        self.runs.join("out")
    }
    /// `gradflow train <config> --out runs/out --quiet`.
    fn train(&self, config: &Path) -> Run {
        let out = self.out();
        gradflow(
            self.tmp.path(),
            [
                "train".as_ref(),
                config.as_os_str(),
                "--out".as_ref(),
                out.as_os_str(),
                "--quiet".as_ref(),
            ],
        )
    }
    /// Asserts that `runs/` is still empty (no run dir, no staging dir) and `cfg/` holds exactly
    /// the files the case wrote.
    fn assert_nothing_written(&self, cfg_before: &[String], run: &Run) {
        assert!(
            entries(&self.runs).is_empty(),
            "something was written next to the output: {:?}\n{}",
            entries(&self.runs),
            run.describe()
        );
        assert_eq!(entries(&self.cfg_dir), cfg_before, "{}", run.describe());
        assert!(
            !run.stdout.contains("results in"),
            "claims results: {}",
            run.describe()
        );
    }
}

/// Writes `config` as `cfg/<name>` (plus `files`), then checks that both `train` and `inspect`
/// refuse it with every needle on stderr and write nothing. Returns the `train` run.
fn refused(name: &str, config: &str, files: &[(&str, Vec<u8>)], needles: &[&str]) -> Run {
    let case = Case::new(name.trim_end_matches(".toml"));
    for (f, bytes) in files {
        case.file(f, bytes);
    }
    let cfg = case.file(name, config);
    let before = entries(&case.cfg_dir);
    let run = case.train(&cfg).failed();
    run.stderr_has(needles);
    case.assert_nothing_written(&before, &run);
    let inspect = gradflow(case.tmp.path(), ["inspect".as_ref(), cfg.as_os_str()]).failed();
    inspect.stderr_has(needles);
    case.assert_nothing_written(&before, &inspect);
    run
}

fn with(replace: &str, by: &str) -> String {
    assert!(BASE.contains(replace), "{replace}");
    BASE.replacen(replace, by, 1)
}

fn npy_config(x: &str, y: &str) -> String {
    format!(
        "[data]\nkind = \"npy\"\nx = \"{x}\"\ny = \"{y}\"\n[model]\npreset = \"dnn\"\nhidden = [4]\n[train]\nepochs = 5\n"
    )
}

/// A valid 6 × 2 input matrix and 6 × 1 targets.
fn good_x() -> Vec<f64> {
    (0..12).map(|k| (k as f64 - 5.5) / 6.0).collect()
}
fn good_y() -> Vec<f64> {
    (0..6).map(|k| (k as f64) / 3.0 - 1.0).collect()
}

// ---------------------------------------------------------------------------------------------
// Config errors.
// ---------------------------------------------------------------------------------------------

#[test]
fn misspelt_key_is_named_with_the_valid_keys() {
    refused(
        "misspelt.toml",
        &with("hidden = [8]", "hiden = [4]"),
        &[],
        &[
            "misspelt.toml",
            "model.hiden",
            "unknown field `hiden`",
            "`hidden`",
        ],
    );
}

#[test]
fn unknown_section_is_named() {
    refused(
        "section.toml",
        &format!("{BASE}[tran]\nepochs = 3\n"),
        &[],
        &["section.toml", "`tran`", "expected one of", "`train`"],
    );
}

#[test]
fn missing_data_n_is_named() {
    refused(
        "missing_n.toml",
        &with("n = 10\n", ""),
        &[],
        &["missing_n.toml", "data.n", "required", "n = 100"],
    );
}

#[test]
fn unknown_preset_lists_the_available_ones() {
    refused(
        "preset.toml",
        &with("preset = \"dnn\"", "preset = \"transformer\""),
        &[],
        &[
            "preset.toml",
            "model.preset",
            "transformer",
            "available: dnn, resnet, gcn",
        ],
    );
}

#[test]
fn zero_and_negative_steps_are_refused() {
    for (tag, lr) in [
        ("lr_zero", "0"),
        ("lr_negative", "-1"),
        ("lr_zero_float", "0.0"),
    ] {
        refused(
            &format!("{tag}.toml"),
            &with("lr = 0.1", &format!("lr = {lr}")),
            &[],
            &[
                &format!("{tag}.toml"),
                "train.lr",
                "must be positive",
                "e.g. lr = 0.01",
            ],
        );
    }
}

#[test]
fn wrongly_typed_step_is_refused() {
    refused(
        "lr_string.toml",
        &with("lr = 0.1", "lr = \"fast\""),
        &[],
        &["lr_string.toml", "train.lr", "expected f64"],
    );
}

#[test]
fn negative_epochs_are_refused() {
    refused(
        "epochs.toml",
        &with("epochs = 20", "epochs = -3"),
        &[],
        // The hint is serde's: what was found and what type is expected.
        &[
            "epochs.toml",
            "train.epochs",
            "-3",
            "expected usize",
            "line 12",
        ],
    );
}

#[test]
fn depth_with_dnn_is_refused() {
    refused(
        "depth.toml",
        &with("hidden = [8]", "hidden = [8]\ndepth = 3"),
        &[],
        &[
            "depth.toml",
            "model.depth",
            "only used by presets resnet and conv-resnet",
            "remove it",
        ],
    );
}

#[test]
fn zero_width_is_refused() {
    refused(
        "width.toml",
        &with("hidden = [8]", "hidden = [8, 0]"),
        &[],
        &["width.toml", "model.hidden", "at least 1"],
    );
}

#[test]
fn graph_section_with_dnn_is_refused() {
    refused(
        "graph_dnn.toml",
        &format!("{BASE}[graph]\nk = 3\n"),
        &[],
        &[
            "graph_dnn.toml",
            "`graph`",
            "only used by graph presets",
            "remove it",
        ],
    );
}

#[test]
fn knn_k_not_below_n_is_refused_for_gcn() {
    let gcn = with("preset = \"dnn\"", "preset = \"gcn\"");
    refused(
        "gcn_k.toml",
        &format!("{gcn}[graph]\nk = 10\n"),
        &[],
        &[
            "gcn_k.toml",
            "graph.k",
            "must be smaller than `data.n` = 10",
            "lower k or raise n",
        ],
    );
    // The default k = 10 with n = 10: the hint says where the 10 came from.
    refused(
        "gcn_default_k.toml",
        &gcn,
        &[],
        &["gcn_default_k.toml", "graph.k", "default", "[graph]"],
    );
}

#[test]
fn knn_k_not_below_n_is_refused_for_gcn_on_npy_data_naming_the_config() {
    let x = npy_f64(6, 2, &good_x());
    let y = npy_f64(6, 1, &good_y());
    let cfg = npy_config("x.npy", "y.npy").replace("\"dnn\"", "\"gcn\"") + "[graph]\nk = 6\n";
    refused(
        "gcn_npy_k.toml",
        &cfg,
        &[("x.npy", x), ("y.npy", y)],
        &["graph.k", "n = 6", "gcn_npy_k.toml"],
    );
}

#[test]
fn malformed_toml_is_a_syntax_error_with_a_line() {
    refused(
        "malformed.toml",
        &with("hidden = [8]", "hidden = [8"),
        &[],
        &[
            "malformed.toml",
            "(syntax)",
            "TOML parse error at line",
            "expected",
        ],
    );
}

#[test]
fn nonexistent_config_path_is_named() {
    let case = Case::new("no-config");
    let cfg = case.cfg_dir.join("no_such_config.toml");
    let run = case.train(&cfg).failed();
    run.stderr_has(&["no_such_config.toml"]);
    assert!(
        run.stderr.to_lowercase().contains("no such file")
            || run.stderr.to_lowercase().contains("cannot find"),
        "{}",
        run.describe()
    );
    case.assert_nothing_written(&[], &run);
    let inspect = gradflow(case.tmp.path(), ["inspect".as_ref(), cfg.as_os_str()]).failed();
    inspect.stderr_has(&["no_such_config.toml"]);
}

#[test]
fn empty_ball_data_is_refused() {
    refused(
        "n_zero.toml",
        &with("n = 10", "n = 0"),
        &[],
        &["n_zero.toml", "data.n", "must be at least 1"],
    );
}

#[test]
fn discontinuous_piecewise_activation_is_refused() {
    refused(
        "piecewise.toml",
        &with(
            "hidden = [8]",
            "hidden = [8]\nactivation = { kind = \"piecewise\", breakpoints = [0.0], coefficients = [[1.0], [0.0, 1.0]] }",
        ),
        &[],
        &[
            "piecewise.toml",
            "model.activation",
            "discontinuous at breakpoint 0",
            "adjust the constant terms",
        ],
    );
}

// ---------------------------------------------------------------------------------------------
// Data file errors.
// ---------------------------------------------------------------------------------------------

#[test]
fn npy_with_nan_names_the_file_and_the_entry() {
    let mut x = good_x();
    x[5] = f64::NAN; // row 2, column 1
    refused(
        "nan.toml",
        &npy_config("x_nan.npy", "y.npy"),
        &[
            ("x_nan.npy", npy_f64(6, 2, &x)),
            ("y.npy", npy_f64(6, 1, &good_y())),
        ],
        &["x_nan.npy", "entry [2, 1] is NaN", "must be finite"],
    );
}

#[test]
fn npy_with_infinity_in_targets_is_refused() {
    let mut y = good_y();
    y[4] = f64::NEG_INFINITY;
    refused(
        "inf.toml",
        &npy_config("x.npy", "y_inf.npy"),
        &[
            ("x.npy", npy_f64(6, 2, &good_x())),
            ("y_inf.npy", npy_f64(6, 1, &y)),
        ],
        &["y_inf.npy", "entry [4, 0] is -inf", "must be finite"],
    );
}

#[test]
fn npy_x_and_y_with_different_n_are_refused() {
    refused(
        "mismatch.toml",
        &npy_config("x.npy", "y_short.npy"),
        &[
            ("x.npy", npy_f64(6, 2, &good_x())),
            ("y_short.npy", npy_f64(5, 1, &good_y()[..5])),
        ],
        &["y_short.npy", "y has 5 rows but x has 6", "same n"],
    );
}

#[test]
fn truncated_npy_is_refused() {
    let mut x = npy_f64(6, 2, &good_x());
    x.truncate(x.len() - 20);
    refused(
        "trunc.toml",
        &npy_config("x_trunc.npy", "y.npy"),
        &[("x_trunc.npy", x), ("y.npy", npy_f64(6, 1, &good_y()))],
        &["x_trunc.npy", "truncated", "needs 96 data bytes", "only 76"],
    );
    // Cut inside the header as well.
    let x = npy_f64(6, 2, &good_x())[..30].to_vec();
    refused(
        "trunc_header.toml",
        &npy_config("x_head.npy", "y.npy"),
        &[("x_head.npy", x), ("y.npy", npy_f64(6, 1, &good_y()))],
        &["x_head.npy", "truncated"],
    );
}

#[test]
fn empty_npy_data_is_refused() {
    refused(
        "empty.toml",
        &npy_config("x_empty.npy", "y.npy"),
        &[
            ("x_empty.npy", npy_f64(0, 2, &[])),
            ("y.npy", npy_f64(6, 1, &good_y())),
        ],
        &["x_empty.npy", "x is empty (0 × 2)", "n, d ≥ 1"],
    );
}

#[test]
fn integer_npy_is_refused_with_the_conversion_hint() {
    refused(
        "int.toml",
        &npy_config("x_int.npy", "y.npy"),
        &[
            ("x_int.npy", npy_raw("<i8", false, &[6, 2], &[0u8; 96])),
            ("y.npy", npy_f64(6, 1, &good_y())),
        ],
        &["x_int.npy", "unsupported dtype '<i8'", "astype(np.float64)"],
    );
}

#[test]
fn missing_npy_file_is_named() {
    refused(
        "missing_npy.toml",
        &npy_config("x.npy", "nowhere.npy"),
        &[("x.npy", npy_f64(6, 2, &good_x()))],
        &["nowhere.npy"],
    );
}

// ---------------------------------------------------------------------------------------------
// ntk --params of another model.
// ---------------------------------------------------------------------------------------------

#[test]
fn ntk_params_of_the_wrong_model_name_the_tensor() {
    let case = Case::new("ntk-params");
    // Parameters of a dnn 2 → [4] → 1.
    let theta = |h: usize| {
        safetensors_bytes(&[
            ("0.weight", vec![h, 2], vec![0.1; 2 * h]),
            ("0.bias", vec![h], vec![0.0; h]),
            ("2.weight", vec![1, h], vec![0.2; h]),
            ("2.bias", vec![1], vec![0.0]),
        ])
    };
    let params = case.file("dnn4.safetensors", theta(4));
    let ball = "[data]\nkind = \"ball\"\nn = 6\nd = 2\nm = 1\n";
    let cases: [(&str, String, &[&str]); 3] = [
        (
            "wider.toml",
            format!("{ball}[model]\npreset = \"dnn\"\nhidden = [5]\n"),
            &[
                "dnn4.safetensors",
                "tensor `0.weight` has shape [4, 2]",
                "needs [5, 2]",
            ],
        ),
        (
            "resnet.toml",
            format!("{ball}[model]\npreset = \"resnet\"\ndepth = 1\n"),
            &[
                "dnn4.safetensors",
                "tensor `0.fn.0.weight`",
                "is missing",
                "check the config's preset",
            ],
        ),
        (
            "deeper.toml",
            format!("{ball}[model]\npreset = \"dnn\"\nhidden = [4, 4]\n"),
            &["dnn4.safetensors", "`2.weight`", "[4, 4]"],
        ),
    ];
    for (name, cfg_text, needles) in cases {
        let cfg = case.file(name, cfg_text);
        let gram = case.runs.join("H.npy");
        let json = case.runs.join("s.json");
        let run = gradflow(
            case.tmp.path(),
            [
                "ntk".as_ref(),
                cfg.as_os_str(),
                "--params".as_ref(),
                params.as_os_str(),
                "--save-gram".as_ref(),
                gram.as_os_str(),
                "--json".as_ref(),
                json.as_os_str(),
            ],
        )
        .failed();
        run.stderr_has(needles);
        assert!(entries(&case.runs).is_empty(), "{name}: {}", run.describe());
    }
    // A tensor too many.
    let extra = case.file(
        "extra.safetensors",
        safetensors_bytes(&[
            ("0.weight", vec![4, 2], vec![0.1; 8]),
            ("0.bias", vec![4], vec![0.0; 4]),
            ("2.weight", vec![1, 4], vec![0.2; 4]),
            ("2.bias", vec![1], vec![0.0]),
            ("9.weight", vec![1], vec![1.0]),
        ]),
    );
    let cfg = case.file(
        "dnn4.toml",
        format!("{ball}[model]\npreset = \"dnn\"\nhidden = [4]\n"),
    );
    gradflow(
        case.tmp.path(),
        [
            "ntk".as_ref(),
            cfg.as_os_str(),
            "--params".as_ref(),
            extra.as_os_str(),
        ],
    )
    .failed()
    .stderr_has(&[
        "extra.safetensors",
        "`9.weight`",
        "not a parameter of this model",
    ]);
    // The right file works (the fixture itself is fine).
    gradflow(
        case.tmp.path(),
        [
            "ntk".as_ref(),
            cfg.as_os_str(),
            "--params".as_ref(),
            params.as_os_str(),
        ],
    )
    .ok();
}

#[test]
fn ntk_save_gram_over_the_memory_budget_is_refused_before_writing() {
    let case = Case::new("ntk-budget");
    let cfg = case.file(
        "budget.toml",
        format!("{BASE}[ntk]\nmemory_budget_gb = 1e-9\n"),
    );
    let gram = case.runs.join("H.npy");
    gradflow(
        case.tmp.path(),
        [
            "ntk".as_ref(),
            cfg.as_os_str(),
            "--save-gram".as_ref(),
            gram.as_os_str(),
        ],
    )
    .failed()
    .stderr_has(&["--save-gram", "ntk.memory_budget_gb", "raise the budget"]);
    assert!(entries(&case.runs).is_empty());
}

// ---------------------------------------------------------------------------------------------
// The output directory.
// ---------------------------------------------------------------------------------------------

#[test]
fn existing_non_empty_out_is_refused_without_force_and_left_untouched() {
    let case = Case::new("out-exists");
    let cfg = case.file("ok.toml", BASE);
    let out = case.out();
    case.tmp.write("runs/out/keep.txt", "precious");
    case.tmp.write("runs/out/sub/data.bin", [1u8, 2, 3]);
    let run = case.train(&cfg).failed();
    run.stderr_has(&["out", "already exists and is not empty", "--force"]);
    assert_eq!(
        entries(&case.runs),
        ["out"],
        "no staging dir: {}",
        run.describe()
    );
    assert_eq!(entries(&out), ["keep.txt", "sub"]);
    assert_eq!(std::fs::read(out.join("keep.txt")).unwrap(), b"precious");
    assert_eq!(std::fs::read(out.join("sub/data.bin")).unwrap(), [1, 2, 3]);
    assert_eq!(entries(&out.join("sub")), ["data.bin"]);
}

#[test]
fn out_naming_an_existing_file_is_refused() {
    let case = Case::new("out-file");
    let cfg = case.file("ok.toml", BASE);
    case.tmp.write("runs/out", "a file");
    let run = case.train(&cfg).failed();
    run.stderr_has(&["out", "not a directory"]);
    assert_eq!(entries(&case.runs), ["out"]);
    assert_eq!(std::fs::read(case.out()).unwrap(), b"a file");
}

#[test]
fn out_dot_in_an_empty_directory_either_works_or_is_refused_up_front() {
    let case = Case::new("out-dot");
    let cfg = case.file("ok.toml", BASE);
    let run = gradflow(
        &case.runs,
        [
            "train".as_ref(),
            cfg.as_os_str(),
            "--out".as_ref(),
            ".".as_ref(),
            "--quiet".as_ref(),
        ],
    );
    if run.success {
        let mut got = entries(&case.runs);
        got.sort();
        assert_eq!(
            got,
            [
                "config.toml",
                "metrics.csv",
                "ntk.csv",
                "params_final.safetensors",
                "params_init.safetensors",
                "summary.json",
                "x.npy",
                "y.npy"
            ]
        );
    } else {
        let run = run.failed();
        assert!(
            !run.stderr.contains("training dnn"),
            "refused only after training, the run is lost: {}",
            run.describe()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// reproduce arguments.
// ---------------------------------------------------------------------------------------------

#[test]
fn bad_reproduce_arguments_are_refused_before_creating_the_output() {
    let case = Case::new("reproduce-args");
    let out = case.out();
    let cases: [(&[&str], &[&str]); 4] = [
        (
            &["--only", "transformer"],
            &["--only `transformer`", "dnn, resnet, gcn"],
        ),
        (&["--shard", "3/2"], &["--shard `3/2`", "0 ≤ i < N"]),
        (&["--scale", "huge"], &["--scale `huge`", "quick or paper"]),
        (&["--seeds", "0"], &["--seeds", "at least 1"]),
    ];
    for (extra, needles) in cases {
        let mut args: Vec<&std::ffi::OsStr> = vec!["reproduce".as_ref()];
        args.extend(extra.iter().map(|a| -> &std::ffi::OsStr { a.as_ref() }));
        args.extend(["--out".as_ref(), out.as_os_str(), "--quiet".as_ref()]);
        let run = gradflow(case.tmp.path(), args).failed();
        run.stderr_has(needles);
        assert!(entries(&case.runs).is_empty(), "{}", run.describe());
    }
}

// ---------------------------------------------------------------------------------------------
// Divergence: the one failure that keeps its run directory.
// ---------------------------------------------------------------------------------------------

#[test]
fn diverging_run_fails_but_keeps_its_directory_with_metrics_up_to_the_divergence() {
    let case = Case::new("diverge");
    let cfg = case.file("diverge.toml", with("lr = 0.1", "lr = 1e4"));
    let run = case.train(&cfg).failed();
    run.stderr_has(&["diverged", "train.lr", "stability"]);
    assert!(
        run.stderr.contains("lower `train.lr`"),
        "{}",
        run.describe()
    );

    // The epoch of the divergence, from the message "diverged at epoch K".
    let k: usize = run
        .stderr
        .split("diverged at epoch ")
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no epoch in the message: {}", run.describe()));
    assert!((1..=20).contains(&k), "{k}");

    // Kept (renamed into place), and no staging directory left.
    let out = case.out();
    assert_eq!(entries(&case.runs), ["out"], "{}", run.describe());
    let files = entries(&out);
    for f in [
        "config.toml",
        "metrics.csv",
        "summary.json",
        "x.npy",
        "y.npy",
        "params_init.safetensors",
    ] {
        assert!(files.iter().any(|g| g == f), "{f} missing: {files:?}");
    }
    let text = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    assert_eq!(
        text.lines().next(),
        Some("epoch,t,loss,grad_norm,kink_crossings,chattering,loss_linearised")
    );
    let (_, rows) = read_csv(&out.join("metrics.csv"));
    let epochs: Vec<f64> = rows.iter().map(|r| r[0]).collect();
    let want: Vec<f64> = (0..k).map(|e| e as f64).collect();
    assert_eq!(
        epochs, want,
        "rows 0..K−1 for a divergence at epoch K = {k}"
    );
    for r in &rows {
        assert!(r[2].is_finite(), "only finite losses are logged: {r:?}");
        assert_eq!(r[1], r[0] * 1e4, "t = epoch·lr");
    }
    assert!(
        rows.last().unwrap()[2] > 1e3 * rows[0][2],
        "the loss blows up before the divergence"
    );

    let s = read_json(&out.join("summary.json"));
    assert_eq!(s["status"], "diverged");
    assert_eq!(s["last_epoch"].as_u64(), Some(k as u64 - 1));
    assert!(
        s["message"].as_str().unwrap_or("").contains("train.lr"),
        "{s}"
    );
    let initial = s["initial_loss"].as_f64().unwrap();
    assert!(rel_diff(initial, rows[0][2]) <= 1e-15);
}

/// Memory guard: sizes that cannot fit are refused up front with the estimate and the fix,
/// before any allocation (a crash or an out-of-memory kill would be the alternative).
#[test]
fn impossible_sizes_are_refused_with_an_estimate() {
    let dir = std::env::temp_dir().join(format!("gradflow-bad-mem-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, text, field) in [
        ("huge_model.toml", "[data]\nkind = \"ball\"\nn = 100000\nd = 10\nm = 2\n[model]\npreset = \"dnn\"\nhidden = [40000, 40000]\n", "model"),
        ("huge_data.toml", "[data]\nkind = \"ball\"\nn = 100000000\nd = 100000\nm = 2\n[model]\npreset = \"dnn\"\nhidden = [4]\n", "data.n"),
    ] {
        let cfg = dir.join(name);
        std::fs::write(&cfg, text).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_gradflow"))
            .args(["train", cfg.to_str().unwrap(), "--out", dir.join("out").to_str().unwrap(), "--quiet"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(name) && err.contains(field) && err.contains("GB"), "{err}");
        assert!(!dir.join("out").exists());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_layer_lists_name_the_entry_line_and_fix() {
    let list = |layers: &str| {
        with("preset = \"dnn\"\nhidden = [8]\n", "")
            .replace("[train]", &format!("{layers}\n[train]"))
    };
    // A misspelt key inside a residual block: the nested entry, its line, the valid keys.
    refused(
        "nested_key.toml",
        &list("[[model.layers]]\nkind = \"residual\"\n[[model.layers.layers]]\nkind = \"dense\"\nout = 4\nbais = false\n[[model.layers]]\nkind = \"dense\"\nout = 2"),
        &[],
        &["nested_key.toml", "model.layers[0].layers[0]", "unknown field `bais`", "`bias`", "line 10"],
    );
    // A residual branch that changes the width: the block, and what the last layer must give.
    refused(
        "residual_shape.toml",
        &list("[[model.layers]]\nkind = \"residual\"\n[[model.layers.layers]]\nkind = \"dense\"\nout = 3\n[[model.layers]]\nkind = \"dense\"\nout = 2"),
        &[],
        &["residual_shape.toml", "model.layers[0].layers", "keep the shape", "give 4"],
    );
    // A convolution on vector data.
    refused(
        "conv_on_vectors.toml",
        &list("[[model.layers]]\nkind = \"conv2d\"\nout = 2\nkernel = 3"),
        &[],
        &[
            "conv_on_vectors.toml",
            "model.layers[0]",
            "images",
            "line 8",
        ],
    );
}
