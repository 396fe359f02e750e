//! Where reads are answered from: the store (`metrics.backend: sqlite`),
//! or a Prometheus-compatible engine's query API (`remote`, see
//! `crate::remote::backend`). `/history`, `/api/charts`, `/series`,
//! `pulse-metrics query` and the UI all read through this, with the same
//! answer shapes either way.

use crate::config::Config;
use crate::error::Result;
use crate::model::{HistoryPoint, SeriesKey, now_ms};
use crate::remote::backend::RemoteReader;
use crate::store::{
    Backend, History, ManyHistory, Resource, ResourceMeta, SeriesFilter, SeriesInfo, Store,
    TimeRange,
};
use std::sync::Arc;

#[derive(Clone)]
pub enum Reads {
    Local(Store),
    Remote(Arc<RemoteReader>),
}

impl Reads {
    /// What `config` asks for over `store`: the store itself, or the
    /// remote-write target that has a `query_url` (validation makes sure
    /// there is one when the backend is remote).
    pub fn for_config(store: &Store, config: &Config) -> std::result::Result<Reads, String> {
        if config.metrics.backend == Backend::Sqlite {
            return Ok(Reads::Local(store.clone()));
        }
        let target = config
            .export
            .remote_write
            .iter()
            .find(|t| !t.query_url.is_empty())
            .ok_or("metrics.backend is remote but no export.remote_write target has a query_url")?;
        let reader = RemoteReader::new(target, config.metrics.retention)?;
        Ok(Reads::Remote(Arc::new(reader)))
    }

    pub fn is_remote(&self) -> bool {
        matches!(self, Reads::Remote(_))
    }

    pub fn keys(&self, filter: &SeriesFilter) -> Result<Vec<SeriesKey>> {
        match self {
            Reads::Local(s) => Ok(s.keys(filter)),
            Reads::Remote(r) => r.keys(filter, now_ms()),
        }
    }

    pub fn query(
        &self,
        key: &SeriesKey,
        range: TimeRange,
        max_points: Option<usize>,
    ) -> Result<History> {
        match self {
            Reads::Local(s) => s.query(key, range, max_points),
            Reads::Remote(r) => r.query(key, range, max_points),
        }
    }

    pub fn query_many(
        &self,
        filter: &SeriesFilter,
        range: TimeRange,
        max_points: Option<usize>,
    ) -> Result<ManyHistory> {
        self.query_many_map(filter, range, max_points, &|_, p| p)
    }

    pub fn query_many_map<T: Send>(
        &self,
        filter: &SeriesFilter,
        range: TimeRange,
        max_points: Option<usize>,
        f: &(dyn Fn(&SeriesKey, Vec<HistoryPoint>) -> T + Sync),
    ) -> Result<ManyHistory<T>> {
        match self {
            Reads::Local(s) => s.query_many_map(filter, range, max_points, f),
            Reads::Remote(r) => r.query_many_map(filter, range, max_points, f),
        }
    }

    pub fn oldest_data_timestamp(&self) -> Result<i64> {
        match self {
            Reads::Local(s) => s.oldest_data_timestamp(),
            Reads::Remote(r) => r.oldest_data_timestamp(now_ms()),
        }
    }

    pub fn series(&self) -> Result<Vec<SeriesInfo>> {
        match self {
            Reads::Local(s) => s.series(),
            Reads::Remote(r) => r.series(now_ms()),
        }
    }

    /// What `series` says of the series `filter` keeps.
    pub fn series_matching(&self, filter: &SeriesFilter) -> Result<Vec<SeriesInfo>> {
        match self {
            Reads::Local(s) => s.series_matching(filter),
            Reads::Remote(r) => Ok(r
                .series(now_ms())?
                .into_iter()
                .filter(|s| filter.matches(&s.key))
                .collect()),
        }
    }

    pub fn resources(&self) -> Result<Vec<Resource>> {
        match self {
            Reads::Local(s) => Ok(s.resources()),
            Reads::Remote(r) => r.resources(now_ms()),
        }
    }

    pub fn resource(&self, resource_type: &str, resource_id: &str) -> Result<Option<ResourceMeta>> {
        match self {
            Reads::Local(s) => Ok(s.resource(resource_type, resource_id)),
            Reads::Remote(r) => Ok(r
                .resources(now_ms())?
                .into_iter()
                .find(|x| x.resource_type == resource_type && x.resource_id == resource_id)
                .map(|x| x.meta)),
        }
    }
}
