//! Keys in PostgreSQL: one row per version, sealed exactly as the file
//! store seals them (the master key never leaves its file or HSM).

use super::{PgError, Shared};
use crate::resource::ResourcePath;
use crate::store::{
    Lookup, OpenError, StoredKey, VersionedKey, choose, open_version, seal_version,
};

fn query(what: &'static str) -> impl Fn(tokio_postgres::Error) -> PgError {
    move |source| PgError::Query { what, source }
}

fn opened(e: OpenError) -> PgError {
    match e {
        OpenError::Corrupt(message) => PgError::Corrupt {
            table: "keys",
            message,
        },
        OpenError::Sealing(m) => PgError::Sealing(m),
    }
}

fn stored(row: &tokio_postgres::Row) -> Result<StoredKey, PgError> {
    let version: i32 = row.get("version");
    Ok(StoredKey {
        version: u32::try_from(version).map_err(|_| PgError::Corrupt {
            table: "keys",
            message: format!("version {version}"),
        })?,
        nonce: row.get("nonce"),
        ciphertext: row.get("ciphertext"),
        retired: row.get("retired"),
    })
}

fn version_param(v: u32) -> Result<i32, PgError> {
    i32::try_from(v).map_err(|_| PgError::Corrupt {
        table: "keys",
        message: format!("version {v} is out of range"),
    })
}

impl Shared {
    /// Opens every stored version once.
    pub(super) async fn check_keys(&self) -> Result<(), PgError> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT resource, version, nonce, ciphertext, retired FROM keys",
                &[],
            )
            .await
            .map_err(query("reading the keys"))?;
        for row in &rows {
            let resource: String = row.get("resource");
            open_version(&self.master, &resource, &stored(row)?).map_err(opened)?;
        }
        Ok(())
    }

    async fn versions(&self, resource: &str) -> Result<Vec<StoredKey>, PgError> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT version, nonce, ciphertext, retired FROM keys WHERE resource = $1",
                &[&resource],
            )
            .await
            .map_err(query("reading a key"))?;
        rows.iter().map(stored).collect()
    }

    /// As `KeyStore::get`.
    pub async fn get_key(
        &self,
        resource: &ResourcePath,
        version: Option<u32>,
    ) -> Result<Result<VersionedKey, Lookup>, PgError> {
        let name = resource.to_string();
        let versions = self.versions(&name).await?;
        match choose(&versions, version) {
            Ok(k) => Ok(Ok((
                k.version,
                open_version(&self.master, &name, k).map_err(opened)?,
            ))),
            Err(lookup) => Ok(Err(lookup)),
        }
    }

    /// Whether `resource` has any version (retired ones included).
    pub async fn contains_key(&self, resource: &ResourcePath) -> Result<bool, PgError> {
        Ok(!self.versions(&resource.to_string()).await?.is_empty())
    }

    /// As `KeyStore::put`: the next version number is taken under a lock
    /// on the resource, so two replicas never give out the same one.
    pub async fn put_key(&self, resource: &ResourcePath, key: &[u8]) -> Result<u32, PgError> {
        let name = resource.to_string();
        let q = query("storing a key");
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(&q)?;
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtext('ciel-key|' || $1))",
            &[&name],
        )
        .await
        .map_err(&q)?;
        let newest: Option<i32> = tx
            .query_one(
                "SELECT max(version) FROM keys WHERE resource = $1",
                &[&name],
            )
            .await
            .map_err(&q)?
            .get(0);
        let version = u32::try_from(newest.unwrap_or(0))
            .unwrap_or(0)
            .saturating_add(1);
        let sealed =
            seal_version(&self.master, &name, version, false, key).map_err(PgError::Sealing)?;
        tx.execute(
            "INSERT INTO keys (resource, version, nonce, ciphertext, retired) VALUES ($1, $2, $3, $4, false)",
            &[&name, &version_param(version)?, &sealed.nonce, &sealed.ciphertext],
        )
        .await
        .map_err(&q)?;
        tx.commit().await.map_err(&q)?;
        Ok(version)
    }

    /// As `KeyStore::retire`: sealed again under the retired associated
    /// data, so setting the column back makes the row refuse to open.
    pub async fn retire_key(&self, resource: &ResourcePath, version: u32) -> Result<bool, PgError> {
        let name = resource.to_string();
        let q = query("retiring a key");
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(&q)?;
        let row = tx
            .query_opt(
                "SELECT version, nonce, ciphertext, retired FROM keys WHERE resource = $1 AND version = $2 FOR UPDATE",
                &[&name, &version_param(version)?],
            )
            .await
            .map_err(&q)?;
        let Some(row) = row else {
            return Ok(false);
        };
        let k = stored(&row)?;
        if k.retired {
            return Ok(true);
        }
        let key = open_version(&self.master, &name, &k).map_err(opened)?;
        let sealed =
            seal_version(&self.master, &name, version, true, &key).map_err(PgError::Sealing)?;
        tx.execute(
            "UPDATE keys SET nonce = $3, ciphertext = $4, retired = true WHERE resource = $1 AND version = $2",
            &[&name, &version_param(version)?, &sealed.nonce, &sealed.ciphertext],
        )
        .await
        .map_err(&q)?;
        tx.commit().await.map_err(&q)?;
        Ok(true)
    }
}
