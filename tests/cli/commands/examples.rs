//! Every architecture's example works with `inspect`, `train` and `ntk`, and one sweep
//! reproduces.

use super::*;

// ---------------------------------------------------------------------------------------------
// 10. Every architecture's example works with inspect, train and ntk, and one sweep reproduces.
// ---------------------------------------------------------------------------------------------

#[test]
fn every_architecture_example_inspects_trains_and_has_an_ntk() {
    let tmp = TempDir::new("cli-arch");
    let dir = root().join("examples");
    let mut done = Vec::new();
    for name in [
        "cnn",
        "conv_resnet",
        "unet",
        "mobilenet",
        "cheb",
        "graphconv",
        "siamese",
        "layers",
    ] {
        let path = dir.join(format!("{name}.toml"));
        let run = gradflow(tmp.path(), ["inspect".as_ref(), path.as_os_str()]).ok();
        assert!(run.stdout.contains("p ≥ nm: "), "{name}\n{}", run.stdout);
        // A short training run: the loss at the end is below the start and the NTK was checked.
        let text = std::fs::read_to_string(&path).unwrap();
        let short = regex_free_set(&text, "epochs", "40");
        let cfg = tmp.write(format!("{name}.toml"), short);
        let out = tmp.join(format!("run-{name}"));
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
        let s: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap())
                .unwrap();
        assert_eq!(s["status"], "completed", "{name}");
        assert!(
            s["final_loss"].as_f64().unwrap() < s["initial_loss"].as_f64().unwrap(),
            "{name}: {s}"
        );
        assert!(
            s["ntk_initial"]["lambda_max"].as_f64().unwrap() > 0.0,
            "{name}"
        );
        let ntk = gradflow(tmp.path(), ["ntk".as_ref(), cfg.as_os_str()]).ok();
        assert!(ntk.stdout.contains("λ_min = "), "{name}\n{}", ntk.stdout);
        done.push(name);
    }
    assert_eq!(done.len(), 8);
    // One architecture sweep end to end (the smallest): its verdicts follow p vs nm.
    let rep = tmp.join("rep-unet");
    gradflow(
        tmp.path(),
        [
            "reproduce",
            "--only",
            "unet",
            "--solver",
            "gd", // 3 s; the flow, the default, takes 25 s here
            "--quiet",
            "--out",
            rep.to_str().unwrap(),
        ],
    )
    .ok();
    let idx: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(rep.join("reproduce.json")).unwrap())
            .unwrap();
    let runs = idx["ablations"][0]["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 4);
    for r in runs {
        let s = &r["summary"];
        if !s["overparametrized"].as_bool().unwrap() {
            assert_eq!(r["verdict"]["lambda_min_positive"], false, "{r}");
        }
    }
}

/// Replaces the value of `key = …` lines in a TOML text.
fn regex_free_set(text: &str, key: &str, value: &str) -> String {
    text.lines()
        .map(|l| {
            if l.trim_start().starts_with(&format!("{key} ="))
                || l.trim_start().starts_with(&format!("{key}="))
            {
                format!("{key} = {value}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}
