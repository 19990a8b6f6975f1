//! `inspect` on every example (p, over-parametrisation, activation class) and `ntk --save-gram`
//! (H = J Jᵀ against a finite-difference Jacobian of a hand-written forward pass).

use super::*;

// ---------------------------------------------------------------------------------------------
// 3. inspect on every example.
// ---------------------------------------------------------------------------------------------

/// p of an example config, computed from its TOML (and, for npy data, the arrays' shapes).
fn example_dims(path: &Path) -> (usize, usize, usize, usize) {
    let text = std::fs::read_to_string(path).unwrap();
    let t: toml::Table = toml::from_str(&text).unwrap();
    let data = t["data"].as_table().unwrap();
    let (n, d, m) = if data["kind"].as_str() == Some("npy") {
        let dir = path.parent().unwrap();
        let x = read_npy(&dir.join(data["x"].as_str().unwrap()));
        let y = read_npy(&dir.join(data["y"].as_str().unwrap()));
        assert_eq!(x.dims().0, y.dims().0);
        (x.dims().0, x.dims().1, y.dims().1)
    } else {
        let g = |k: &str| data[k].as_integer().unwrap() as usize;
        (g("n"), g("d"), g("m"))
    };
    let model = t["model"].as_table().unwrap();
    let prelu = model
        .get("activation")
        .map(|a| {
            a.as_str() == Some("prelu") || a.get("kind").and_then(|k| k.as_str()) == Some("prelu")
        })
        .unwrap_or(false) as usize;
    let p = match model["preset"].as_str().unwrap() {
        "dnn" | "gcn" => {
            let hidden: Vec<usize> = model["hidden"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_integer().unwrap() as usize)
                .collect();
            dense_param_count(d, &hidden, m) + prelu * hidden.len()
        }
        "resnet" => {
            let depth = model["depth"].as_integer().unwrap() as usize;
            depth * ((d + 1) * d + prelu) + (d + 1) * m
        }
        other => panic!("unknown preset {other}"),
    };
    (p, n, d, m)
}

const SHIPPED_EXAMPLES: [&str; 5] = [
    "dnn.toml",
    "dnn_npy.toml",
    "dnn_piecewise.toml",
    "gcn.toml",
    "resnet.toml",
];

#[test]
fn inspect_reports_p_overparametrisation_and_activation_class_for_every_example() {
    let tmp = TempDir::new("cli-inspect");
    let dir = root().join("examples");
    let mut seen = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_none_or(|x| x != "toml") {
            continue;
        }
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let run = gradflow(tmp.path(), ["inspect".as_ref(), path.as_os_str()]).ok();
        // p by hand for the dense presets here; the other architectures' counts are checked by
        // hand in tests/training/presets_extra.rs, and their examples in `every_architecture_example_*`.
        let text = std::fs::read_to_string(&path).unwrap();
        // A layer list (examples/layers.toml) has no preset; its p is checked by hand in
        // tests/layer_spec.rs.
        let preset = text.parse::<toml::Table>().unwrap()["model"]
            .get("preset")
            .and_then(|p| p.as_str())
            .unwrap_or("")
            .to_string();
        if !["dnn", "gcn", "resnet"].contains(&preset.as_str()) {
            continue;
        }
        let (p, n, d, m) = example_dims(&path);
        let out = &run.stdout;
        assert!(
            out.contains(&format!("\np = {p}\n")),
            "{name}: p = {p} expected\n{out}"
        );
        assert!(
            out.contains(&format!("n = {n}, d = {d}, m = {m}, nm = {}", n * m)),
            "{name}\n{out}"
        );
        let over = if p >= n * m {
            "p ≥ nm: yes"
        } else {
            "p ≥ nm: no"
        };
        assert!(out.contains(over), "{name}: expected {over:?}\n{out}");
        let class = out
            .lines()
            .find(|l| l.starts_with("activation "))
            .unwrap_or_else(|| panic!("{name}: no activation line\n{out}"));
        assert!(
            [
                "Theorem 3.1",
                "Corollary 3.1.1",
                "Corollary 3.1.2",
                "not covered"
            ]
            .iter()
            .any(|c| class.contains(c)),
            "{name}: {class}"
        );
        // The shipped examples use a leaky ReLU or a continuous piecewise polynomial with one zero.
        if SHIPPED_EXAMPLES.contains(&name.as_str()) {
            assert!(class.contains("meets Theorem 3.1"), "{name}: {class}");
        }
        if name == "dnn.toml" {
            assert_eq!(p, 4931);
            assert!(out.contains("p = 4931"), "{out}");
            assert!(out.contains("leaky-relu(α=0.01)"), "{out}");
        }
        if name == "gcn.toml" {
            assert!(out.contains("graph: 40 nodes, "), "{out}");
        }
        seen.push(name);
    }
    for name in SHIPPED_EXAMPLES {
        assert!(
            seen.iter().any(|s| s == name),
            "{name} was not inspected: {seen:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 4. ntk --save-gram: H = J Jᵀ against a finite-difference Jacobian of a hand-written forward pass.
// ---------------------------------------------------------------------------------------------

/// Eigenvalues of a small symmetric matrix by cyclic Jacobi rotations, ascending.
fn jacobi_eigenvalues(mut a: Vec<f64>, n: usize) -> Vec<f64> {
    let scale: f64 = a.iter().map(|v| v * v).sum::<f64>().sqrt();
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * n + j].powi(2))
            .sum::<f64>()
            .sqrt();
        if off <= 1e-15 * scale {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq == 0.0 {
                    continue;
                }
                let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (akp, akq) = (a[k * n + p], a[k * n + q]);
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p * n + k], a[q * n + k]);
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
            }
        }
    }
    let mut eig: Vec<f64> = (0..n).map(|i| a[i * n + i]).collect();
    eig.sort_by(f64::total_cmp);
    eig
}

#[test]
fn ntk_gram_equals_finite_difference_jacobian_product() {
    let tmp = TempDir::new("cli-ntk");
    let (n, d, h, m) = (3, 2, 3, 2);
    let x = [0.5, -0.3, -0.8, 0.6, 0.2, 0.9];
    let y = [0.1, 0.2, -0.3, 0.4, 0.5, -0.6];
    // θ in the file's layout: 0.weight (h×d), 0.bias, 2.weight (m×h), 2.bias.
    let w1 = vec![0.7, -0.4, -0.5, 0.9, 0.3, 0.8];
    let b1 = vec![0.1, -0.2, 0.05];
    let w2 = vec![0.6, -0.7, 0.2, 0.4, 0.5, -0.9];
    let b2 = vec![0.3, -0.1];
    tmp.write("x.npy", npy_f64(n, d, &x));
    tmp.write("y.npy", npy_f64(n, m, &y));
    let params = tmp.write(
        "theta.safetensors",
        safetensors_bytes(&[
            ("0.weight", vec![h, d], w1.clone()),
            ("0.bias", vec![h], b1.clone()),
            ("2.weight", vec![m, h], w2.clone()),
            ("2.bias", vec![m], b2.clone()),
        ]),
    );
    let cfg = tmp.write(
        "tiny.toml",
        "[data]\nkind = \"npy\"\nx = \"x.npy\"\ny = \"y.npy\"\n[model]\npreset = \"dnn\"\nhidden = [3]\nactivation = { kind = \"leaky-relu\", slope = 0.01 }\n",
    );
    let gram = tmp.join("out/H.npy");
    let json = tmp.join("out/s.json");
    std::fs::create_dir_all(gram.parent().unwrap()).unwrap();
    let run = gradflow(
        tmp.path(),
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
    .ok();

    // The forward pass as a function of the flat θ = (w1, b1, w2, b2).
    let theta0: Vec<f64> = [w1, b1, w2, b2].concat();
    let p = theta0.len();
    assert_eq!(p, dense_param_count(d, &[h], m));
    let split = |th: &[f64]| {
        let (a, rest) = th.split_at(h * d);
        let (b, rest) = rest.split_at(h);
        let (c, e) = rest.split_at(m * h);
        vec![
            Affine {
                w: a.to_vec(),
                b: b.to_vec(),
                fan_in: d,
                fan_out: h,
            },
            Affine {
                w: c.to_vec(),
                b: e.to_vec(),
                fan_in: h,
                fan_out: m,
            },
        ]
    };
    let f = |th: &[f64]| -> Vec<f64> {
        let layers = split(th);
        (0..n)
            .flat_map(|i| dnn_forward(&layers, 0.01, &x[i * d..(i + 1) * d]))
            .collect()
    };
    // Precondition: no pre-activation near the kink, so central differences are exact up to
    // rounding (the outputs are quadratic in θ on each linear piece).
    let first = &split(&theta0)[0];
    for i in 0..n {
        for z in first.apply(&x[i * d..(i + 1) * d]) {
            assert!(z.abs() > 1e-2, "pre-activation {z} too close to the kink");
        }
    }
    // J[(i·m + a), k] by central differences.
    let step = 1e-6;
    let dim = n * m;
    let mut jac = vec![0.0; dim * p];
    for k in 0..p {
        let (mut tp, mut tm) = (theta0.clone(), theta0.clone());
        tp[k] += step;
        tm[k] -= step;
        let (fp, fm) = (f(&tp), f(&tm));
        for r in 0..dim {
            jac[r * p + k] = (fp[r] - fm[r]) / (2.0 * step);
        }
    }
    let jjt: Vec<f64> = (0..dim)
        .flat_map(|r| (0..dim).map(move |s| (r, s)))
        .map(|(r, s)| (0..p).map(|k| jac[r * p + k] * jac[s * p + k]).sum())
        .collect();

    let hm = read_npy(&gram);
    assert_eq!(hm.shape, vec![dim, dim]);
    assert!(!hm.fortran_order);
    for r in 0..dim {
        for s in 0..dim {
            let (a, b) = (hm.at(r, s), hm.at(s, r));
            let scale = (hm.at(r, r) * hm.at(s, s)).sqrt();
            assert!(
                (a - b).abs() <= 1e-12 * scale,
                "H not symmetric at ({r}, {s})"
            );
            assert!(
                (a - jjt[r * dim + s]).abs() <= 1e-6 * scale,
                "H[{r},{s}] = {a}, (J Jᵀ) = {} (index i·m + a)",
                jjt[r * dim + s]
            );
        }
    }
    let trace: f64 = (0..dim).map(|r| hm.at(r, r)).sum();
    let sum_sq: f64 = jac.iter().map(|v| v * v).sum();
    assert!(
        rel_diff(trace, sum_sq) <= 1e-6,
        "trace {trace} vs ΣJ² {sum_sq}"
    );

    // λ_min, λ_max of our own eigen-solve against the reported ones.
    let eig = jacobi_eigenvalues(jjt, dim);
    let s = read_json(&json);
    let (lmin, lmax, acc) = (
        json_f64(&s, "lambda_min"),
        json_f64(&s, "lambda_max"),
        json_f64(&s, "lambda_min_accuracy"),
    );
    assert_eq!(json_usize(&s, "dim"), dim);
    assert_eq!(json_usize(&s, "p"), p);
    assert!(
        eig[0] > 1e-6 * eig[dim - 1],
        "expected a positive-definite H here: {eig:?}"
    );
    assert!(
        (lmin - eig[0]).abs() <= acc + 1e-6 * eig[dim - 1],
        "λ_min {lmin} vs {}",
        eig[0]
    );
    assert!(
        rel_diff(lmax, eig[dim - 1]) <= 1e-6,
        "λ_max {lmax} vs {}",
        eig[dim - 1]
    );
    assert!(run.stdout.contains("λ_min = "), "{}", run.describe());
}

#[test]
fn ntk_of_saved_final_parameters_matches_the_runs_summary() {
    let tmp = TempDir::new("cli-ntk-final");
    let (out, _) = train(&tmp, "small_dnn", SMALL_DNN, "run");
    let json = tmp.join("s.json");
    let cfg = tmp.join("cfg/small_dnn.toml");
    let params = out.join("params_final.safetensors");
    gradflow(
        tmp.path(),
        [
            "ntk".as_ref(),
            cfg.as_os_str(),
            "--params".as_ref(),
            params.as_os_str(),
            "--json".as_ref(),
            json.as_os_str(),
        ],
    )
    .ok();
    let s = read_json(&json);
    let summary = read_json(&out.join("summary.json"));
    let fin = &summary["ntk_final"];
    for key in ["lambda_min", "lambda_max"] {
        let (a, b) = (json_f64(&s, key), json_f64(fin, key));
        assert!(rel_diff(a, b) <= 1e-9, "{key}: ntk {a} vs summary {b}");
    }
    // Without --params: the initialisation, i.e. the run's first checkpoint.
    gradflow(
        tmp.path(),
        [
            "ntk".as_ref(),
            cfg.as_os_str(),
            "--json".as_ref(),
            json.as_os_str(),
        ],
    )
    .ok();
    let s = read_json(&json);
    let a = json_f64(&s, "lambda_max");
    let b = json_f64(&summary["ntk_initial"], "lambda_max");
    assert!(rel_diff(a, b) <= 1e-9, "λ_max at init: {a} vs {b}");
}
