//! Throwaway databases: a PostgreSQL database per test on the server named by
//! `CHORUS_TEST_POSTGRES_URL`, or a SQLite file in a temp directory.

use sqlx::Connection;

pub const POSTGRES_ENV: &str = "CHORUS_TEST_POSTGRES_URL";

/// The engines a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestEngine {
    Sqlite,
    Postgres,
}

/// A database for one test. PostgreSQL databases are dropped on [`TestDatabase::drop_now`].
pub struct TestDatabase {
    /// `None` for SQLite: the server's default file in its data directory.
    pub url: Option<String>,
    admin: Option<(String, String)>,
}

impl TestDatabase {
    pub async fn create(engine: TestEngine) -> TestDatabase {
        match engine {
            TestEngine::Sqlite => TestDatabase { url: None, admin: None },
            TestEngine::Postgres => {
                let admin_url = std::env::var(POSTGRES_ENV).unwrap_or_default();
                assert!(
                    !admin_url.trim().is_empty(),
                    "{POSTGRES_ENV} is not set: start a server with `eval \"$(scripts/test-services.sh start)\"` (scripts/test.sh does this)"
                );
                let name = format!("chorus_test_{}", uuid::Uuid::new_v4().simple());
                let mut conn = sqlx::PgConnection::connect(&admin_url).await.expect("connecting to the test PostgreSQL");
                // The name is ours (a UUID), never input.
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\""))).execute(&mut conn).await.expect("creating a test database");
                let _ = conn.close().await;
                let base = admin_url.rsplit_once('/').map_or(admin_url.as_str(), |(b, _)| b).to_owned();
                TestDatabase { url: Some(format!("{base}/{name}")), admin: Some((admin_url, name)) }
            }
        }
    }

    /// Drops a PostgreSQL test database (after the server using it closed).
    pub async fn drop_now(&self) {
        if let Some((admin_url, name)) = &self.admin
            && let Ok(mut conn) = sqlx::PgConnection::connect(admin_url).await
        {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))).execute(&mut conn).await;
            let _ = conn.close().await;
        }
    }
}
