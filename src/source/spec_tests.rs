use super::*;

fn git(url: &str) -> SourceSpec {
    SourceSpec::Git {
        url: url.to_string(),
        branch: None,
        path: None,
        file: None,
    }
}

#[test]
fn urls() {
    for ok in [
        "https://github.com/o/r.git",
        "HTTPS://github.com/o/r",
        "http://10.0.0.1:3000/o/r.git",
        "ssh://git@github.com:22/o/r.git",
        "git@github.com:o/r.git",
        "deploy@git.example.com:team/r",
        "file:///srv/git/r.git",
        "/srv/git/r.git",
    ] {
        assert_eq!(git(ok).validate(), Ok(()), "{ok}");
    }
    for (bad, why) in [
        ("", "empty"),
        ("-uhttps://x", "'-'"),
        ("--upload-pack=touch /tmp/x", "'-'"),
        ("ext::sh -c touch% /tmp/pwned", "spaces"),
        ("ext::sh", "remote helper"),
        ("fd::17", "remote helper"),
        ("https://", "no repository"),
        ("relative/path", "not a git URL"),
        ("ftp://host/r", "not a git URL"),
        ("host:path", "not a git URL"),
        ("https://x/r\n", "control"),
    ] {
        let e = git(bad).validate().unwrap_err();
        assert!(e.starts_with("source.url "), "{e}");
        assert!(e.contains(why), "{bad}: {e}");
    }
}

#[test]
fn url_errors_hide_credentials() {
    let e = validate_url("https://bob:hunter2@host/r x").unwrap_err();
    assert!(!e.contains("hunter2"), "{e}");
    assert!(e.contains("https://bob:***@host/r x"), "{e}");
}

#[test]
fn redaction() {
    for (url, shown) in [
        ("https://bob:hunter2@host/r", "https://bob:***@host/r"),
        (
            "https://ghp_token@github.com/o/r",
            "https://***@github.com/o/r",
        ),
        ("http://h:h@h/h", "http://h:***@h/h"),
        ("https://u:p@ss@host/r", "https://u:***@host/r"),
        ("ssh://git@host/r", "ssh://git@host/r"),
        ("git@host:r", "git@host:r"),
        ("https://host/a@b", "https://host/a@b"),
        ("/srv/r.git", "/srv/r.git"),
    ] {
        assert_eq!(redact_url(url), shown, "{url}");
    }
    let url = "https://bob:h@host/r";
    let text = "fatal: unable to access 'https://bob:h@host/r': https failed";
    assert_eq!(
        redact_text(text, url),
        "fatal: unable to access 'https://bob:***@host/r': https failed"
    );
    assert_eq!(redact_text("see bob:h@host", url), "see bob:***@host");
}

#[test]
fn branches() {
    for ok in ["main", "release/1.2", "feature-x", "v1.0", "a.b/c_d", "x@y"] {
        assert_eq!(validate_branch(ok), Ok(()), "{ok}");
    }
    for bad in [
        "", "-b", "HEAD", "@", "a..b", "a b", "a~1", "a^", "a:b", "a?", "a*", "a[b", "a\\b",
        "a\tb", "x.lock", "x.lock/y", "a/", "/a", "a//b", ".hidden", "a/.b", "a.", "a@{1}",
    ] {
        let e = validate_branch(bad).unwrap_err();
        assert!(e.starts_with("source.branch "), "{e}");
        assert!(e.contains(&format!("{bad:?}")), "{e}");
    }
}

#[test]
fn relative_paths() {
    let spec = |path: Option<&str>, file: Option<&str>| SourceSpec::Git {
        url: "https://h/r".into(),
        branch: Some("main".into()),
        path: path.map(String::from),
        file: file.map(String::from),
    };
    assert_eq!(
        spec(Some("deploy/prod"), Some("stack.yml")).validate(),
        Ok(())
    );
    assert_eq!(spec(Some("./x"), Some("sub/c.yaml")).validate(), Ok(()));
    for (p, f, key) in [
        (Some("../x"), None, "source.path"),
        (Some("a/../../b"), None, "source.path"),
        (Some("/etc"), None, "source.path"),
        (Some(""), None, "source.path"),
        (None, Some("../../etc/passwd"), "source.file"),
        (None, Some("/etc/passwd"), "source.file"),
    ] {
        let e = spec(p, f).validate().unwrap_err();
        assert!(e.starts_with(key), "{e}");
    }
}

#[test]
fn file_source_must_be_absolute() {
    let ok = SourceSpec::File {
        path: "/srv/app/compose.yaml".into(),
    };
    assert_eq!(ok.validate(), Ok(()));
    let e = SourceSpec::File {
        path: "compose.yaml".into(),
    }
    .validate()
    .unwrap_err();
    assert!(e.contains("source.path compose.yaml"), "{e}");
}

#[test]
fn serde_shape() {
    let spec: SourceSpec = serde_json::from_str(
        r#"{"kind":"git","url":"git@h:o/r.git","branch":"main","path":"deploy"}"#,
    )
    .unwrap();
    assert_eq!(
        spec,
        SourceSpec::Git {
            url: "git@h:o/r.git".into(),
            branch: Some("main".into()),
            path: Some("deploy".into()),
            file: None,
        }
    );
    assert_eq!(
        serde_json::to_string(&spec).unwrap(),
        r#"{"kind":"git","url":"git@h:o/r.git","branch":"main","path":"deploy"}"#
    );
    let file: SourceSpec = serde_json::from_str(r#"{"kind":"file","path":"/a/c.yaml"}"#).unwrap();
    assert_eq!(
        file,
        SourceSpec::File {
            path: "/a/c.yaml".into()
        }
    );
    let e = serde_json::from_str::<SourceSpec>(r#"{"kind":"git","url":"/r","brnach":"x"}"#)
        .unwrap_err();
    assert!(e.to_string().contains("brnach"), "{e}");
}

#[test]
fn compose_file_lookup() {
    let root = std::env::temp_dir().join(format!("berth-source-spec-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let repo = root.join("repo");
    std::fs::create_dir_all(repo.join("deploy")).unwrap();
    std::fs::write(repo.join("docker-compose.yml"), "services: {}\n").unwrap();
    std::fs::write(repo.join("compose.yml"), "services: {}\n").unwrap();
    std::fs::write(repo.join("deploy/stack.yaml"), "services: {}\n").unwrap();
    std::fs::write(root.join("outside.yaml"), "secret\n").unwrap();
    std::os::unix::fs::symlink(root.join("outside.yaml"), repo.join("deploy/compose.yaml"))
        .unwrap();
    let real = repo.canonicalize().unwrap();

    // The first name of the list that exists wins.
    assert_eq!(
        find_compose_file(&repo, None, None),
        Ok(real.join("docker-compose.yml"))
    );
    assert_eq!(
        find_compose_file(&repo, Some("deploy"), Some("stack.yaml")),
        Ok(real.join("deploy/stack.yaml"))
    );
    let e = find_compose_file(&repo, Some("deploy"), None).unwrap_err();
    assert!(e.contains("not a file inside the repository"), "{e}");
    let e = find_compose_file(&repo, Some("deploy"), Some("nope.yaml")).unwrap_err();
    assert!(e.starts_with("source.file deploy/nope.yaml"), "{e}");
    let e = find_compose_file(&repo, Some("nowhere"), None).unwrap_err();
    assert!(e.contains("none of compose.yaml"), "{e}");
    let e = find_compose_file(&repo, Some(".."), None).unwrap_err();
    assert!(e.contains("'..'"), "{e}");

    std::fs::remove_dir_all(&root).unwrap();
}
