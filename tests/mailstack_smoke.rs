//! The test harness for real mail servers works: Postfix delivers into
//! Dovecot, IMAP APPEND/FETCH/STATUS, Dovecot and Postfix stop and start
//! again with their state, and the TLS setup (IMAPS, SMTP STARTTLS,
//! submission and SMTPS with AUTH) verifies against the stack's test CA.
//! Every test starts a stack of its own, so they run in parallel.

#[path = "support/mailstack.rs"]
mod mailstack;

use mailstack::{send_with, MailStack, Outgoing, ALERTS, ALICE, BOB, SUPPORT};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(10);

fn start() -> MailStack {
    let t = Instant::now();
    let stack = MailStack::start();
    eprintln!("stack up in {:?}: {:?}", t.elapsed(), stack.settings());
    stack
}

fn text(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_mail_arrives_in_the_inbox() {
    let stack = start();

    let t = Instant::now();
    stack
        .send(
            ALICE,
            SUPPORT,
            ("Printer on fire", "Please help, it is burning."),
        )
        .await;
    let n = stack.wait_for_count(SUPPORT, "INBOX", 1, WAIT).await;
    eprintln!("SMTP -> IMAP INBOX in {:?}", t.elapsed());
    assert_eq!(n, 1);
    let mails = stack.fetch_all(SUPPORT, "INBOX").await;
    assert_eq!(mails.len(), 1);
    let mail = text(&mails[0]);
    assert!(mail.contains("Subject: Printer on fire"), "{mail}");
    assert!(mail.contains("Please help, it is burning."), "{mail}");
    assert!(mail.contains("From: alice@customer.test"), "{mail}");

    // raw bytes go through unchanged, to any address of the two domains
    let raw = b"From: Bob <bob@customer.test>\r\nTo: alerts@example.test\r\n\
        Message-ID: <raw-1@customer.test>\r\nSubject: disk full\r\n\r\n/var is at 99%\r\n";
    stack.send(BOB, ALERTS, raw).await;
    stack.send(BOB, "someone.new@example.test", raw).await;
    stack.wait_for_count(ALERTS, "INBOX", 1, WAIT).await;
    stack
        .wait_for_count("someone.new@example.test", "INBOX", 1, WAIT)
        .await;
    let got = text(&stack.fetch_all(ALERTS, "INBOX").await[0]);
    assert!(got.contains("Message-ID: <raw-1@customer.test>"), "{got}");

    // a burst over one connection
    let burst = (0..20).map(|i| (format!("burst {i}"), "x"));
    assert_eq!(stack.send_many(ALICE, BOB, burst).await, 20);
    assert_eq!(stack.wait_for_count(BOB, "INBOX", 20, WAIT).await, 20);

    // nothing else is relayed
    let err = stack
        .try_send(ALICE, "someone@elsewhere.example", ("relay?", "no"))
        .await
        .expect_err("the test stack relayed mail to another domain");
    assert!(err.is_permanent(), "{err}");
    // and a wrong password is refused over IMAP
    let mut wrong = tokio::net::TcpStream::connect((stack.host(), stack.imap_port()))
        .await
        .map(async_imap::Client::new)
        .unwrap();
    wrong.read_response().await.unwrap();
    assert!(wrong.login(SUPPORT, "wrong").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_fetch_and_count() {
    let stack = start();
    let mails: Vec<Vec<u8>> = (0..100)
        .map(|i| {
            format!(
                "From: alice@customer.test\r\nTo: support@example.test\r\n\
                 Message-ID: <bulk-{i}@customer.test>\r\nSubject: bulk {i}\r\n\r\nmail number {i}\r\n"
            )
            .into_bytes()
        })
        .collect();
    let t = Instant::now();
    assert_eq!(stack.append_many(SUPPORT, "INBOX", &mails).await, 100);
    eprintln!("100 APPENDs in {:?}", t.elapsed());
    assert_eq!(stack.count(SUPPORT, "INBOX").await, 100);
    let fetched = stack.fetch_all(SUPPORT, "INBOX").await;
    assert_eq!(fetched.len(), 100);
    for (i, m) in fetched.iter().enumerate() {
        assert!(text(m).contains(&format!("<bulk-{i}@customer.test>")));
    }

    // other folders are created on APPEND; a missing one counts 0
    stack.append(SUPPORT, "Processed", &mails[0]).await;
    assert_eq!(stack.count(SUPPORT, "Processed").await, 1);
    assert_eq!(stack.count(SUPPORT, "Quarantine").await, 0);
    assert_eq!(stack.count(BOB, "INBOX").await, 0);
    assert!(stack.fetch_all(BOB, "INBOX").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dovecot_and_postfix_restart_with_their_state() {
    let stack = start();
    stack
        .append(SUPPORT, "INBOX", b"Subject: before\r\n\r\nx\r\n")
        .await;

    let t = Instant::now();
    stack.stop_imap();
    eprintln!("Dovecot stopped in {:?}", t.elapsed());
    assert!(stack.try_imap(SUPPORT).await.is_err(), "IMAP still up");
    // Postfix takes the mail and keeps it queued while Dovecot is down
    stack
        .send(ALICE, SUPPORT, ("while down", "queued in Postfix"))
        .await;
    let t = Instant::now();
    stack.start_imap();
    eprintln!("Dovecot started in {:?}", t.elapsed());
    let t = Instant::now();
    assert_eq!(stack.wait_for_count(SUPPORT, "INBOX", 2, WAIT).await, 2);
    eprintln!("queued mail delivered {:?} after the start", t.elapsed());
    let mails = stack.fetch_all(SUPPORT, "INBOX").await;
    assert!(text(&mails[0]).contains("Subject: before"));
    assert!(text(&mails[1]).contains("Subject: while down"));

    let t = Instant::now();
    stack.stop_smtp();
    eprintln!("Postfix stopped in {:?}", t.elapsed());
    let err = stack
        .try_send(ALICE, SUPPORT, ("refused", "Postfix is down"))
        .await
        .expect_err("SMTP still up");
    eprintln!("send while Postfix is down: {err}");
    let t = Instant::now();
    stack.start_smtp();
    eprintln!("Postfix started in {:?}", t.elapsed());
    stack
        .send(ALICE, SUPPORT, ("after", "Postfix is back"))
        .await;
    assert_eq!(stack.wait_for_count(SUPPORT, "INBOX", 3, WAIT).await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_the_test_certificate() {
    let stack = start();

    // IMAPS, the certificate checked against the stack's CA
    let mut s = stack.imaps(ALICE).await;
    let inbox = s.select("INBOX").await.unwrap();
    assert_eq!(inbox.exists, 0);
    s.logout().await.unwrap();

    // SMTP with STARTTLS on the SMTP port, no AUTH
    send_with(
        &stack.smtp_starttls(),
        BOB,
        ALICE,
        Outgoing::from(("over STARTTLS", "hello")),
    )
    .await
    .expect("SMTP STARTTLS with the test CA");
    // submission (STARTTLS + AUTH) and SMTPS (implicit TLS + AUTH)
    send_with(
        &stack.submission(SUPPORT),
        SUPPORT,
        ALICE,
        Outgoing::from(("over submission", "hello")),
    )
    .await
    .expect("submission with AUTH");
    send_with(
        &stack.smtps(SUPPORT),
        SUPPORT,
        ALICE,
        Outgoing::from(("over SMTPS", "hello")),
    )
    .await
    .expect("SMTPS with AUTH");
    assert_eq!(stack.wait_for_count(ALICE, "INBOX", 3, WAIT).await, 3);
    let all = stack.fetch_all(ALICE, "INBOX").await.concat();
    let all = text(&all);
    for subject in ["over STARTTLS", "over submission", "over SMTPS"] {
        assert!(all.contains(subject), "{subject} missing");
    }

    // the checks are real: without the test CA the handshake fails ...
    let untrusting =
        lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::builder_dangerous(stack.host())
            .port(stack.smtp_port())
            .tls(lettre::transport::smtp::client::Tls::Required(
                lettre::transport::smtp::client::TlsParameters::new(stack.tls_server_name().into())
                    .unwrap(),
            ))
            .build();
    let err = send_with(&untrusting, BOB, ALICE, Outgoing::from(("x", "y")))
        .await
        .expect_err("STARTTLS accepted a certificate of an unknown CA");
    eprintln!("STARTTLS without the test CA: {err}");
    // ... and submission refuses a wrong password
    let bad = lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::builder_dangerous(stack.host())
        .port(stack.submission_port())
        .tls(lettre::transport::smtp::client::Tls::Required(
            stack.smtp_tls_parameters(),
        ))
        .credentials(lettre::transport::smtp::authentication::Credentials::new(
            SUPPORT.into(),
            "wrong".into(),
        ))
        .build();
    assert!(send_with(&bad, SUPPORT, ALICE, Outgoing::from(("x", "y")))
        .await
        .is_err());
}
