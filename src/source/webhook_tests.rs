use super::*;

const SECRET: &str = "It's a Secret to Everybody";
/// GitHub's published example for SECRET and "Hello, World!".
const HELLO: &str = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

#[test]
fn secrets_are_new_and_hex() {
    let a = new_secret().unwrap();
    let b = new_secret().unwrap();
    assert_eq!(a.len(), 64);
    assert!(a
        .bytes()
        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    assert_ne!(a, b);
}

#[test]
fn signatures() {
    let body = b"Hello, World!";
    assert_eq!(verify_signature(SECRET, body, Some(HELLO)), Ok(()));
    assert_eq!(
        verify_signature(
            SECRET,
            body,
            Some(&HELLO.to_uppercase().replace("SHA256=", "sha256="))
        ),
        Ok(())
    );
    assert_eq!(
        verify_signature(SECRET, body, Some(&format!(" {HELLO}\n"))),
        Ok(())
    );
    assert_eq!(
        verify_signature("It's a secret to everybody", body, Some(HELLO)),
        Err(SignatureError::Mismatch)
    );
    assert_eq!(
        verify_signature(SECRET, b"Hello, World?", Some(HELLO)),
        Err(SignatureError::Mismatch)
    );
    assert_eq!(
        verify_signature("", body, Some(HELLO)),
        Err(SignatureError::Mismatch)
    );
    assert_eq!(
        verify_signature(SECRET, body, None),
        Err(SignatureError::Missing)
    );
}

#[test]
fn empty_body() {
    let empty = "sha256=66a0c074deaa0f489ead6537e0d32f9a344b90bbeda705b6ed45ecd3b413fb40";
    assert_eq!(verify_signature(SECRET, b"", Some(empty)), Ok(()));
    assert_eq!(
        verify_signature(SECRET, b"", Some(HELLO)),
        Err(SignatureError::Mismatch)
    );
}

#[test]
fn malformed_signatures_say_why_without_echoing() {
    let digits = &HELLO["sha256=".len()..];
    let long = format!("sha256={}", "a".repeat(10_000));
    for (header, why) in [
        (digits.to_string(), "does not start with \"sha256=\""),
        (format!("sha1={digits}"), "does not start with \"sha256=\""),
        (format!("sha256={}", &digits[..63]), "has 63 characters"),
        (long, "has 10000 characters"),
        (format!("sha256={}zz", &digits[..62]), "is not hex"),
        (format!("sha256={}é", &digits[..62]), "is not hex"),
        ("sha256=".to_string(), "has 0 characters"),
    ] {
        match verify_signature(SECRET, b"Hello, World!", Some(&header)) {
            Err(e @ SignatureError::Malformed(_)) => {
                let shown = e.to_string();
                assert!(shown.contains(why), "{header}: {shown}");
                assert!(
                    !shown.contains(&digits[..20]) && shown.len() < 100,
                    "{shown}"
                );
            }
            other => panic!("{header}: {other:?}"),
        }
    }
}

#[test]
fn gitlab_tokens() {
    assert_eq!(verify_token("s3cret", Some("s3cret")), Ok(()));
    assert_eq!(
        verify_token("s3cret", Some("s3cre")),
        Err(SignatureError::Mismatch)
    );
    assert_eq!(verify_token("", Some("")), Err(SignatureError::Mismatch));
    assert_eq!(verify_token("s3cret", None), Err(SignatureError::Missing));
}

const SHA: &str = "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c";
const ZERO: &str = "0000000000000000000000000000000000000000";

fn push(event: Option<&str>, body: &str) -> Push {
    match parse_push(event, body.as_bytes()) {
        Ok(Hook::Push(p)) => p,
        other => panic!("{body}: {other:?}"),
    }
}

#[test]
fn github_push() {
    let body = format!(
        r#"{{"ref":"refs/heads/main","before":"{ZERO}","after":"{SHA}","created":true,"deleted":false,
            "repository":{{"full_name":"o/r","default_branch":"main"}},"commits":[]}}"#
    );
    let p = push(Some("push"), &body);
    assert_eq!(
        p,
        Push {
            branch: Some("main".into()),
            commit: Some(SHA.into()),
            deleted: false,
            default_branch: Some("main".into()),
        }
    );
    // The body alone suffices when the caller has no event header.
    assert_eq!(push(None, &body), p);
}

#[test]
fn github_deletion_and_tags() {
    let body = format!(r#"{{"ref":"refs/heads/old","after":"{ZERO}","deleted":true}}"#);
    let p = push(Some("push"), &body);
    assert_eq!(
        (p.branch.as_deref(), p.commit, p.deleted),
        (Some("old"), None, true)
    );

    let body = format!(r#"{{"ref":"refs/tags/v1.0","after":"{SHA}","deleted":false}}"#);
    let p = push(Some("push"), &body);
    assert_eq!((p.branch, p.commit.as_deref()), (None, Some(SHA)));
}

#[test]
fn github_ping() {
    let body = br#"{"zen":"Keep it logically awesome.","hook_id":1}"#;
    assert_eq!(parse_push(Some("ping"), body), Ok(Hook::Ping));
}

#[test]
fn gitea_push() {
    // Gitea and Forgejo: no `deleted`, upper-case hex is accepted and lowered.
    let body = format!(
        r#"{{"ref":"refs/heads/dev","before":"{ZERO}","after":"{}","compare_url":"",
            "repository":{{"default_branch":"main"}},"pusher":{{"login":"u"}}}}"#,
        SHA.to_uppercase()
    );
    let p = push(Some("push"), &body);
    assert_eq!(
        (p.branch.as_deref(), p.commit.as_deref(), p.deleted),
        (Some("dev"), Some(SHA), false)
    );
    assert_eq!(p.default_branch.as_deref(), Some("main"));
    // A deletion is a move to the zero sha.
    let body = format!(r#"{{"ref":"refs/heads/dev","after":"{ZERO}"}}"#);
    assert!(push(Some("push"), &body).deleted);
}

#[test]
fn gitlab_push() {
    let tag_object = "1111111111111111111111111111111111111111";
    let body = format!(
        r#"{{"object_kind":"tag_push","ref":"refs/tags/v2","after":"{tag_object}","checkout_sha":"{SHA}",
            "project":{{"default_branch":"trunk"}},"repository":{{"name":"r"}}}}"#
    );
    let p = push(Some("Tag Push Hook"), &body);
    assert_eq!((p.branch, p.commit.as_deref()), (None, Some(SHA)));

    let body = format!(
        r#"{{"object_kind":"push","ref":"refs/heads/trunk","after":"{SHA}","checkout_sha":"{SHA}",
            "project":{{"default_branch":"trunk"}},"repository":{{"name":"r"}}}}"#
    );
    let p = push(Some("Push Hook"), &body);
    assert_eq!(p.default_branch.as_deref(), Some("trunk"));
    assert!(p.moves(None));

    let body = format!(r#"{{"ref":"refs/heads/trunk","after":"{ZERO}","checkout_sha":null}}"#);
    let p = push(Some("Push Hook"), &body);
    assert_eq!((p.commit, p.deleted), (None, true));
}

#[test]
fn not_a_push() {
    for (event, body, why) in [
        (
            Some("push"),
            "not json".to_string(),
            "not a JSON push payload",
        ),
        (Some("push"), "[1,2]".to_string(), "not a JSON push payload"),
        (Some("push"), r#"{"after":"x"}"#.to_string(), "no \"ref\""),
        (None, r#"{"zen":"hi"}"#.to_string(), "no \"ref\""),
        (
            Some("issues"),
            r#"{"ref":"refs/heads/main"}"#.to_string(),
            "event \"issues\": not a push",
        ),
        (
            Some("push"),
            r#"{"ref":"refs/heads/main","after":"HEAD~1"}"#.to_string(),
            "\"after\" \"HEAD~1\"",
        ),
        (
            Some("push"),
            format!(
                r#"{{"ref":"refs/heads/main","after":"{}"}}"#,
                "a".repeat(500)
            ),
            "not a commit sha",
        ),
    ] {
        let e = parse_push(event, body.as_bytes()).unwrap_err();
        assert!(e.contains(why), "{body}: {e}");
        assert!(e.len() < 200, "{e}");
    }
}

#[test]
fn which_pushes_move_a_source() {
    let p = |branch: Option<&str>, deleted: bool, default: Option<&str>| Push {
        branch: branch.map(String::from),
        commit: (!deleted).then(|| SHA.to_string()),
        deleted,
        default_branch: default.map(String::from),
    };
    for (push, follows, moves) in [
        (p(Some("main"), false, Some("main")), Some("main"), true),
        (p(Some("main"), false, None), Some("main"), true),
        (p(Some("dev"), false, Some("main")), Some("main"), false),
        (p(Some("main"), false, Some("main")), None, true),
        (p(Some("dev"), false, Some("main")), None, false),
        (p(Some("main"), false, None), None, false),
        (p(Some("main"), true, Some("main")), Some("main"), false),
        (p(None, false, Some("main")), None, false),
        (p(None, false, Some("main")), Some("main"), false),
    ] {
        assert_eq!(push.moves(follows), moves, "{push:?} following {follows:?}");
    }
}
