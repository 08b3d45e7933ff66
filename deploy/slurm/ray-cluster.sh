#!/bin/bash
# Start a Ray cluster across the nodes of the current SLURM allocation: the
# head on the first node, one worker on each other node (the pattern of Ray's
# SLURM guide, docs.ray.io "Deploying on Slurm"). Source it from a batch
# script; it exports RAY_ADDRESS for genda and stops its Ray processes when
# the batch script exits.
#
#   source deploy/slurm/ray-cluster.sh
#   genda cycle --config cycle.yaml        # connects through RAY_ADDRESS

if [[ -z "${SLURM_JOB_NODELIST:-}" ]]; then
    echo "ray-cluster.sh: run inside a SLURM allocation (sbatch or salloc)" >&2
    exit 1
fi

ray_port=${RAY_PORT:-6379}
ray_cpus=${SLURM_CPUS_PER_TASK:-1}
ray_gpus=${SLURM_GPUS_ON_NODE:-0}
mapfile -t ray_nodes < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
ray_head=${ray_nodes[0]}
ray_head_ip=$(srun --nodes=1 --ntasks=1 -w "$ray_head" hostname --ip-address | awk '{print $1}')
export RAY_ADDRESS="${ray_head_ip}:${ray_port}"

# --block keeps each Ray node in the foreground of its srun step, so the
# steps end (and Ray with them) when this job ends or is cancelled.
srun --nodes=1 --ntasks=1 -w "$ray_head" \
    ray start --head --node-ip-address="$ray_head_ip" --port="$ray_port" \
    --num-cpus="$ray_cpus" --num-gpus="$ray_gpus" --include-dashboard=false --block &
ray_pids=("$!")
sleep "${RAY_HEAD_WAIT:-20}"

for node in "${ray_nodes[@]:1}"; do
    srun --nodes=1 --ntasks=1 -w "$node" \
        ray start --address="$RAY_ADDRESS" \
        --num-cpus="$ray_cpus" --num-gpus="$ray_gpus" --block &
    ray_pids+=("$!")
done
sleep "${RAY_WORKER_WAIT:-10}"

stop_ray_cluster() {
    kill "${ray_pids[@]}" 2>/dev/null || true
    wait "${ray_pids[@]}" 2>/dev/null || true
}
trap stop_ray_cluster EXIT
echo "Ray cluster of ${#ray_nodes[@]} nodes at $RAY_ADDRESS"
