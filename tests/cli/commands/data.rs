//! Data files end to end: the GCN's symmetrised k-NN graph and its loss through Â by hand;
//! examples/dnn_npy.toml and its `.npy` variants (Fortran order, float32).

use super::*;

// ---------------------------------------------------------------------------------------------
// 6. GCN: the graph file, and the loss through Â by hand.
// ---------------------------------------------------------------------------------------------

#[test]
fn gcn_run_writes_the_symmetrised_knn_graph_and_its_loss_matches_a_hand_forward_pass() {
    let tmp = TempDir::new("cli-gcn");
    let (n, d, m, k) = (20, 3, 2, 3);
    let config = format!(
        "seed = 5\n[data]\nkind = \"ball\"\nn = {n}\nd = {d}\nm = {m}\n[graph]\nk = {k}\n[model]\npreset = \"gcn\"\nhidden = [6]\n[train]\nlr = 0.05\nepochs = 30\n[ntk]\nevery = 0\n"
    );
    let (out, _) = train(&tmp, "small_gcn", &config, "gcn");
    let mut want_files: Vec<&str> = RUN_FILES.to_vec();
    want_files.push("edges.csv");
    want_files.sort();
    assert_eq!(entries(&out), want_files);

    let text = std::fs::read_to_string(out.join("edges.csv")).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("source,target"));
    let edges: Vec<(usize, usize)> = lines
        .map(|l| {
            let (a, b) = l.split_once(',').unwrap_or_else(|| panic!("{l:?}"));
            (a.trim().parse().unwrap(), b.trim().parse().unwrap())
        })
        .collect();
    for &(i, j) in &edges {
        assert!(i < j && j < n, "edge ({i}, {j}) must have i < j < n = {n}");
    }
    let set: BTreeSet<(usize, usize)> = edges.iter().copied().collect();
    assert_eq!(set.len(), edges.len(), "duplicate edges");

    // Independent k-NN graph of x.npy: i ~ j when j is among i's k nearest or i among j's.
    let x = read_npy(&out.join("x.npy"));
    assert_eq!(x.dims(), (n, d));
    let dist = |i: usize, j: usize| {
        (0..d)
            .map(|c| (x.at(i, c) - x.at(j, c)).powi(2))
            .sum::<f64>()
    };
    let mut knn = BTreeSet::new();
    for i in 0..n {
        let mut others: Vec<usize> = (0..n).filter(|&j| j != i).collect();
        others.sort_by(|&a, &b| dist(i, a).total_cmp(&dist(i, b)).then(a.cmp(&b)));
        for &j in &others[..k] {
            knn.insert((i.min(j), i.max(j)));
        }
    }
    assert_eq!(
        set, knn,
        "edges.csv is not the symmetrised {k}-NN graph of x.npy"
    );
    let inspect_cfg = tmp.join("cfg/small_gcn.toml");
    let inspect = gradflow(tmp.path(), ["inspect".as_ref(), inspect_cfg.as_os_str()]).ok();
    assert!(
        inspect.stdout.contains(&format!(
            "graph: {n} nodes, {} undirected edges",
            edges.len()
        )),
        "{}",
        inspect.describe()
    );

    // Parameter names {3l+1}.weight/bias and the epoch-0 loss through Â = D̃^{-1/2}(A+I)D̃^{-1/2}.
    let (t, _) = read_safetensors(&out.join("params_init.safetensors"));
    let names: Vec<&str> = t.keys().map(String::as_str).collect();
    assert_eq!(names, ["1.bias", "1.weight", "4.bias", "4.weight"]);
    let layers = affine_layers(&t, 3, 1);
    assert_eq!(layers[0].fan_in, d);
    assert_eq!(layers[1].fan_out, m);
    let s = read_json(&out.join("summary.json"));
    assert_eq!(json_usize(&s, "p"), dense_param_count(d, &[6], m));

    let mut deg = vec![1.0_f64; n];
    for &(i, j) in &edges {
        deg[i] += 1.0;
        deg[j] += 1.0;
    }
    let mut a_hat = vec![0.0; n * n];
    for i in 0..n {
        a_hat[i * n + i] = 1.0 / deg[i];
    }
    for &(i, j) in &edges {
        let v = 1.0 / (deg[i] * deg[j]).sqrt();
        a_hat[i * n + j] = v;
        a_hat[j * n + i] = v;
    }
    let mut hs: Vec<Vec<f64>> = (0..n)
        .map(|i| (0..d).map(|c| x.at(i, c)).collect())
        .collect();
    for (l, layer) in layers.iter().enumerate() {
        let width = hs[0].len();
        hs = (0..n)
            .map(|i| {
                let agg: Vec<f64> = (0..width)
                    .map(|c| (0..n).map(|j| a_hat[i * n + j] * hs[j][c]).sum())
                    .collect();
                let mut z = layer.apply(&agg);
                if l + 1 < layers.len() {
                    z.iter_mut().for_each(|v| *v = leaky_relu(*v, 0.01));
                }
                z
            })
            .collect();
    }
    let u: Vec<f64> = hs.concat();
    let y = read_npy(&out.join("y.npy"));
    let (_, rows) = read_csv(&out.join("metrics.csv"));
    let l0 = mse(&u, &y.data);
    assert!(
        rel_diff(l0, rows[0][2]) <= 1e-12,
        "gcn epoch-0 loss: by hand {l0}, metrics.csv {}",
        rows[0][2]
    );
}

// ---------------------------------------------------------------------------------------------
// 7. examples/dnn_npy.toml and its data files; npy variants.
// ---------------------------------------------------------------------------------------------

#[test]
fn dnn_npy_example_data_inspect_and_short_train() {
    let tmp = TempDir::new("cli-npy");
    let data = root().join("examples/data");
    let x = read_npy(&data.join("x.npy"));
    let y = read_npy(&data.join("y.npy"));
    assert_eq!(
        (x.descr.as_str(), x.fortran_order, x.dims()),
        ("<f8", false, (40, 8))
    );
    assert_eq!(
        (y.descr.as_str(), y.fortran_order, y.dims()),
        ("<f8", false, (40, 3))
    );
    assert!(x.data.iter().chain(&y.data).all(|v| v.is_finite()));

    let example = root().join("examples/dnn_npy.toml");
    let run = gradflow(tmp.path(), ["inspect".as_ref(), example.as_os_str()]).ok();
    assert!(run.stdout.contains("\np = 4931\n"), "{}", run.describe());
    assert!(
        run.stdout.contains("n = 40, d = 8, m = 3, nm = 120"),
        "{}",
        run.describe()
    );

    // The example verbatim except for fewer epochs, next to a copy of its data directory.
    let text = std::fs::read_to_string(&example).unwrap();
    assert!(text.contains("epochs = 2000"));
    let short = text.replace("epochs = 2000", "epochs = 150");
    std::fs::create_dir_all(tmp.join("ex/data")).unwrap();
    std::fs::copy(data.join("x.npy"), tmp.join("ex/data/x.npy")).unwrap();
    std::fs::copy(data.join("y.npy"), tmp.join("ex/data/y.npy")).unwrap();
    let cfg = tmp.write("ex/dnn_npy.toml", short);
    let out = tmp.join("runs/npy");
    gradflow(
        tmp.path(),
        [
            "train".as_ref(),
            cfg.as_os_str(),
            "--out".as_ref(),
            out.as_os_str(),
            "--quiet".as_ref(),
        ],
    )
    .ok();
    assert_eq!(read_npy(&out.join("x.npy")).data, x.data);
    assert_eq!(read_npy(&out.join("y.npy")).data, y.data);
    let s = read_json(&out.join("summary.json"));
    assert_eq!(
        (
            json_usize(&s, "n"),
            json_usize(&s, "d"),
            json_usize(&s, "m"),
            json_usize(&s, "p")
        ),
        (40, 8, 3, 4931)
    );
    assert!(json_f64(&s, "final_loss") < json_f64(&s, "initial_loss"));
    let (init, _) = read_safetensors(&out.join("params_init.safetensors"));
    let l0 = mse(&dnn_outputs(&affine_layers(&init, 2, 0), 0.01, &x), &y.data);
    assert!(rel_diff(l0, json_f64(&s, "initial_loss")) <= 1e-12);
}

#[test]
fn fortran_order_and_float32_npy_inputs_are_read_as_the_same_matrices() {
    let tmp = TempDir::new("cli-npy-layouts");
    let (n, d, m) = (7, 3, 2);
    let x: Vec<f64> = (0..n * d)
        .map(|k| ((k * 37 % 11) as f64 - 5.0) / 7.0)
        .collect();
    let y: Vec<f32> = (0..n * m).map(|k| (k as f32 - 6.0) / 4.0).collect();
    // x stored column-major (np.asfortranarray), y as float32.
    let mut xf = Vec::new();
    for j in 0..d {
        for i in 0..n {
            xf.extend_from_slice(&x[i * d + j].to_le_bytes());
        }
    }
    tmp.write("xf.npy", npy_raw("<f8", true, &[n, d], &xf));
    let yb: Vec<u8> = y.iter().flat_map(|v| v.to_le_bytes()).collect();
    tmp.write("y32.npy", npy_raw("<f4", false, &[n, m], &yb));
    let (out, _) = train(
        &tmp,
        "layouts",
        "[data]\nkind = \"npy\"\nx = \"../xf.npy\"\ny = \"../y32.npy\"\n[model]\npreset = \"dnn\"\nhidden = [4]\n[train]\nepochs = 3\n",
        "run",
    );
    let xr = read_npy(&out.join("x.npy"));
    let yr = read_npy(&out.join("y.npy"));
    assert_eq!((xr.fortran_order, xr.dims()), (false, (n, d)));
    assert_eq!(
        xr.data, x,
        "Fortran-order x must be transposed into C order"
    );
    assert_eq!(yr.descr, "<f8");
    assert_eq!(yr.data, y.iter().map(|v| *v as f64).collect::<Vec<_>>());
}
