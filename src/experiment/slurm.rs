//! `reproduce --emit-slurm N`: the cluster job for a sharded reproduction, written instead of
//! running it. Three files in `<out>/slurm/`:
//!
//! - `shards.sbatch`: an array job of N tasks; task i runs `reproduce --shard i/N` into
//!   `<out>/shard-i` with the same options as the command that wrote it;
//! - `merge.sbatch`: `gradflow merge` of the N shard directories into `<out>` (its index,
//!   verdicts and report);
//! - `submit.sh`: submits the array, then the merge with `--dependency=afterok` on it.
//!
//! The scripts call the binary that wrote them by its absolute path, so they work on a cluster
//! whose nodes share the file system; `#SBATCH` lines are comments to bash, so each script also
//! runs by hand (the tests do that).

use crate::error::{Error, Result};
use crate::io::atomic::write_atomic;
use std::path::{Path, PathBuf};

/// What a sharded reproduction needs: the binary, the options every shard repeats, the count.
#[derive(Clone, Debug)]
pub struct SlurmJob {
    /// The `gradflow` binary the scripts run.
    pub binary: PathBuf,
    /// The reproduce options every shard repeats (everything but `--shard` and `--out`).
    pub reproduce_args: Vec<String>,
    /// N ≥ 1 shards.
    pub shards: usize,
    /// The merged output directory; shard i writes `<out>/shard-i`.
    pub out: PathBuf,
}

/// `s` as one bash word (single-quoted unless it is plainly safe).
fn quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn path_word(p: &Path) -> String {
    quote(&p.to_string_lossy())
}

impl SlurmJob {
    /// The array job's script.
    pub fn shards_script(&self) -> String {
        let out = path_word(&self.out);
        let args: Vec<String> = self.reproduce_args.iter().map(|a| quote(a)).collect();
        format!(
            "#!/bin/bash\n\
             # gradflow reproduce, {n} shards: task i runs --shard i/{n} into {out}/shard-i.\n\
             # Submit with submit.sh (the merge waits for every task).\n\
             #SBATCH --job-name=gradflow-reproduce\n\
             #SBATCH --array=0-{last}\n\
             #SBATCH --cpus-per-task=2\n\
             #SBATCH --output={out}/slurm/shard-%a.log\n\
             set -euo pipefail\n\
             export RAYON_NUM_THREADS=\"${{SLURM_CPUS_PER_TASK:-2}}\"\n\
             task=\"${{SLURM_ARRAY_TASK_ID:?run as a Slurm array task, or set SLURM_ARRAY_TASK_ID}}\"\n\
             {bin} reproduce {args} --quiet --shard \"$task/{n}\" --out {out}/shard-\"$task\"\n",
            n = self.shards,
            last = self.shards - 1,
            bin = path_word(&self.binary),
            args = args.join(" "),
        )
    }

    /// The merge job's script.
    pub fn merge_script(&self) -> String {
        let out = path_word(&self.out);
        let dirs: Vec<String> = (0..self.shards)
            .map(|i| format!("{out}/shard-{i}"))
            .collect();
        format!(
            "#!/bin/bash\n\
             # gradflow merge: joins the {n} shards into {out} (index, verdicts, report).\n\
             #SBATCH --job-name=gradflow-merge\n\
             #SBATCH --cpus-per-task=2\n\
             #SBATCH --output={out}/slurm/merge.log\n\
             set -euo pipefail\n\
             {bin} merge {dirs} --out {out}\n",
            n = self.shards,
            bin = path_word(&self.binary),
            dirs = dirs.join(" "),
        )
    }

    /// The submission script: the array, then the merge after every task succeeded.
    pub fn submit_script(&self) -> String {
        "#!/bin/bash\n\
         # Submits the shard array, then the merge once every shard has succeeded.\n\
         set -euo pipefail\n\
         cd \"$(dirname \"$0\")\"\n\
         array=$(sbatch --parsable shards.sbatch)\n\
         sbatch --dependency=afterok:\"${array%%;*}\" merge.sbatch\n"
            .to_string()
    }

    /// Writes the three scripts into `<out>/slurm/` (each atomically) and returns that directory.
    pub fn write(&self) -> Result<PathBuf> {
        if self.shards == 0 {
            return Err(Error::Invalid(
                "--emit-slurm 0: give the number of shards, at least 1 (e.g. --emit-slurm 8)"
                    .into(),
            ));
        }
        let dir = self.out.join("slurm");
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        for (name, text) in [
            ("shards.sbatch", self.shards_script()),
            ("merge.sbatch", self.merge_script()),
            ("submit.sh", self.submit_script()),
        ] {
            let path = dir.join(name);
            write_atomic(&path, text.as_bytes())?;
            set_executable(&path)?;
        }
        Ok(dir)
    }
}

#[cfg(unix)]
fn set_executable(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| Error::io(path, e))
}

#[cfg(not(unix))]
fn set_executable(_path: &Path) -> Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_keeps_words_whole() {
        assert_eq!(quote("runs/a-b_1.5"), "runs/a-b_1.5");
        assert_eq!(quote("my runs"), "'my runs'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote(""), "''");
    }

    #[test]
    fn array_covers_every_shard_and_the_merge_names_each() {
        let job = SlurmJob {
            binary: "/opt/gradflow".into(),
            reproduce_args: vec!["--scale".into(), "paper".into()],
            shards: 8,
            out: "/scratch/my runs".into(),
        };
        let s = job.shards_script();
        assert!(s.contains("#SBATCH --array=0-7\n"), "{s}");
        assert!(s.contains("/opt/gradflow reproduce --scale paper --quiet --shard \"$task/8\""));
        assert!(
            s.contains("--out '/scratch/my runs'/shard-\"$task\""),
            "{s}"
        );
        let m = job.merge_script();
        for i in 0..8 {
            assert!(m.contains(&format!("'/scratch/my runs'/shard-{i} ")), "{m}");
        }
        assert!(!m.contains("shard-8"));
        assert!(job.submit_script().contains("--dependency=afterok:"));
    }
}
