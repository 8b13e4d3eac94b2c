//! The small habits of the command line: `--version` names the build,
//! `completions` prints a script for each shell, `man` a manual page, and
//! none of them needs a config file.

use std::process::Command;

fn run(args: &[&str]) -> String {
    let dir = crate::support::temp_dir("cli");
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .current_dir(&dir)
        .output()
        .expect("the binary runs");
    assert!(out.status.success(), "{args:?}: {out:?}");
    String::from_utf8(out.stdout).expect("UTF-8")
}

#[test]
fn version_completions_and_man_page_need_no_config() {
    let version = run(&["--version"]);
    assert!(
        version.starts_with(concat!("switchyard ", env!("CARGO_PKG_VERSION"))),
        "{version}"
    );
    for shell in ["bash", "zsh", "fish"] {
        let script = run(&["completions", shell]);
        assert!(script.contains("switchyard"), "{shell}: {script}");
        assert!(
            script.contains("check"),
            "{shell} completes the subcommands"
        );
        let flag = script.contains("--config") || script.contains("-l config");
        assert!(flag, "{shell} completes the flags");
    }
    let man = run(&["man"]);
    assert!(man.contains(".TH switchyard 1"), "{man}");
    assert!(
        man.contains("completions"),
        "the page lists the subcommands"
    );
}
