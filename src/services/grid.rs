//! GridService (网格): grids by code and by region through the generic data
//! path, plus what only grids have — locating the grid that contains a
//! point, a grid's workers, and the region tree.

use super::data::{
    DataApi, Filter, Wire, data_requests, data_service, plan_listing, pull, wire_all,
};
use crate::control::authz::Denial;
use crate::datasets::Dataset;
use crate::datasets::codes::RegionCode;
use crate::datasets::mask::Projected;
use crate::proto::{
    AuditQuery, AuditReceipt, GetGridRequest, GetGridResponse, GetRegionTreeRequest,
    GetRegionTreeResponse, Grid, GridPage, GridWorker, ListGridWorkersRequest,
    ListGridWorkersResponse, ListGridsRequest, LocateGridRequest, LocateGridResponse, Operation,
    RegionNode, grid_service_server, v2,
};
use std::collections::BTreeMap;
use tonic::{Code, Request, Response, Status};

/// Most grid workers returned for one grid.
const MAX_WORKERS: usize = 1000;

/// `ListGrids` has no filter of its own.
impl Filter for ListGridsRequest {
    type Record = Grid;
}

data_requests! {
    Grid => {
        get GetGridRequest.grid_code;
        list ListGridsRequest;
    }
}

/// One API version of GridService: its name (as the log records it), the
/// tonic trait, and the version's reply messages that carry records —
/// the generic get and list, and grid's own RPCs.
macro_rules! grid_service {
    (
        $name:literal as $service:path => {
            get: $get:ty, page: $page:ty, locate: $locate:ty, workers: $workers:ty $(,)?
        }
    ) => {
        data_service! {
            $name as $service => {
                get GetGrid => get_grid(GetGridRequest) -> $get { grid };
                list ListGrids => list_grids(ListGridsRequest) -> ListGridsStream = $page { grids };
            }

            async fn locate_grid(
                &self,
                req: Request<LocateGridRequest>,
            ) -> Result<Response<$locate>, Status> {
                type Reply = $locate;
                let method = concat!("/", $name, "/LocateGrid");
                let (grid, receipt) = self.locate(req, method).await?;
                Ok(Response::new(Reply {
                    grid: Some(Wire::wire(grid)?),
                    receipt: Some(receipt),
                }))
            }

            async fn list_grid_workers(
                &self,
                req: Request<ListGridWorkersRequest>,
            ) -> Result<Response<$workers>, Status> {
                type Reply = $workers;
                let method = concat!("/", $name, "/ListGridWorkers");
                let (workers, receipt) = self.workers(req, method).await?;
                Ok(Response::new(Reply {
                    workers: wire_all(workers)?,
                    receipt: Some(receipt),
                }))
            }

            async fn get_region_tree(
                &self,
                req: Request<GetRegionTreeRequest>,
            ) -> Result<Response<GetRegionTreeResponse>, Status> {
                let method = concat!("/", $name, "/GetRegionTree");
                self.region_tree(req, method).await.map(Response::new)
            }
        }
    };
}

grid_service! {
    "govshare.v1.GridService" as grid_service_server::GridService => {
        get: GetGridResponse,
        page: GridPage,
        locate: LocateGridResponse,
        workers: ListGridWorkersResponse,
    }
}

grid_service! {
    "govshare.v2.GridService" as v2::grid_service_server::GridService => {
        get: v2::GetGridResponse,
        page: v2::GridPage,
        locate: v2::LocateGridResponse,
        workers: v2::ListGridWorkersResponse,
    }
}

/// What only grids have, for every API version: each returns the released
/// records for the version to put on the wire.
impl DataApi {
    /// The grid that contains a point, if one is visible to the caller.
    async fn locate(
        &self,
        req: Request<LocateGridRequest>,
        method: &'static str,
    ) -> Result<(Projected<Grid>, AuditReceipt), Status> {
        let r = req.get_ref();
        let query = AuditQuery {
            filter: format!("lon={},lat={}", r.lon, r.lat),
            ..Default::default()
        };
        let spec = pull(method, Dataset::Grid, Operation::Get, query);
        let mut adm = self.pipeline.admit(&req, r.context.as_ref(), spec).await?;
        if !(r.lon.is_finite()
            && r.lat.is_finite()
            && (-180.0..=180.0).contains(&r.lon)
            && (-90.0..=90.0).contains(&r.lat))
        {
            let d = Denial::new(
                "INVALID_ARGUMENT",
                "lon must be in [-180, 180] and lat in [-90, 90] degrees",
            );
            return Err(adm.refuse(Code::InvalidArgument, d).await);
        }
        let masked = adm.locate(r.lon, r.lat).await?;
        let (mut grids, _, receipt) = adm.release(masked).await?.into_parts();
        if grids.is_empty() {
            return Err(Status::not_found(
                "no grid visible to your department contains this point",
            ));
        }
        Ok((grids.swap_remove(0), receipt))
    }

    /// A grid's workers (at most [`MAX_WORKERS`]).
    async fn workers(
        &self,
        req: Request<ListGridWorkersRequest>,
        method: &'static str,
    ) -> Result<(Vec<Projected<GridWorker>>, AuditReceipt), Status> {
        let r = req.get_ref();
        let query = AuditQuery {
            region: r.grid_code.clone(),
            ..Default::default()
        };
        let spec = pull(method, Dataset::Grid, Operation::List, query);
        let mut adm = self.pipeline.admit(&req, r.context.as_ref(), spec).await?;
        if let Err(e) = RegionCode::parse_grid(&r.grid_code) {
            let d = Denial::new("INVALID_ARGUMENT", format!("grid_code: {e}"));
            return Err(adm.refuse(Code::InvalidArgument, d).await);
        }
        let listing = plan_listing(&adm, &r.grid_code, 0, "", 0).await?;
        let (masked, _) = adm
            .scan::<GridWorker>(listing.prefixes, None, MAX_WORKERS.min(listing.total), None)
            .await?;
        let (workers, _, receipt) = adm.release(masked).await?.into_parts();
        Ok((workers, receipt))
    }

    /// The region tree inside the caller's grants (the same in every
    /// version: region nodes carry no field views).
    async fn region_tree(
        &self,
        req: Request<GetRegionTreeRequest>,
        method: &'static str,
    ) -> Result<GetRegionTreeResponse, Status> {
        let r = req.get_ref();
        let query = AuditQuery {
            region: r.root_code.clone(),
            ..Default::default()
        };
        let spec = pull(method, Dataset::Grid, Operation::List, query);
        let mut adm = self.pipeline.admit(&req, r.context.as_ref(), spec).await?;
        if !r.root_code.is_empty() {
            if let Err(e) = RegionCode::parse(&r.root_code) {
                let d = Denial::new("INVALID_ARGUMENT", format!("root_code: {e}"));
                return Err(adm.refuse(Code::InvalidArgument, d).await);
            }
        }
        let masked = adm.region_tree(r.root_code.clone()).await?;
        let (nodes, _, receipt) = adm.release(masked).await?.into_parts();
        let nodes = nodes
            .into_iter()
            .map(|n| n.record.decode())
            .collect::<Result<_, _>>()
            .map_err(|e| {
                tracing::error!(error = %e, "a released region node does not decode");
                Status::internal("a region node is damaged in the gateway's store; see its log")
            })?;
        Ok(GetRegionTreeResponse {
            roots: nest(nodes),
            receipt: Some(receipt),
        })
    }
}

/// Nests flat nodes under their parents; nodes whose parent is absent are roots.
fn nest(nodes: Vec<RegionNode>) -> Vec<RegionNode> {
    let mut by_code: BTreeMap<String, RegionNode> =
        nodes.into_iter().map(|n| (n.code.clone(), n)).collect();
    let mut codes: Vec<String> = by_code.keys().cloned().collect();
    // Deepest first, so each node is complete before it moves into its parent.
    codes.sort_by(|a, b| b.len().cmp(&a.len()).then(b.cmp(a)));
    let mut roots = Vec::new();
    for code in codes {
        let node = by_code.remove(&code).expect("present");
        match by_code.get_mut(&node.parent_code) {
            Some(parent) => parent.children.insert(0, node),
            None => roots.insert(0, node),
        }
    }
    roots
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nests_by_parent_in_code_order() {
        let n = |code: &str, parent: &str| RegionNode {
            code: code.into(),
            parent_code: parent.into(),
            ..Default::default()
        };
        let roots = nest(vec![
            n("310115004001", "310115004"),
            n("310115", ""),
            n("310115004", "310115"),
            n("310115004002", "310115004"),
            n("310115004001001", "310115004001"),
        ]);
        assert_eq!(roots.len(), 1);
        let street = &roots[0].children[0];
        assert_eq!(
            street
                .children
                .iter()
                .map(|c| c.code.as_str())
                .collect::<Vec<_>>(),
            ["310115004001", "310115004002"]
        );
        assert_eq!(street.children[0].children[0].code, "310115004001001");
    }
}
