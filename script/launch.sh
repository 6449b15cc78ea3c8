# Sourced by train.sh, eval.sh (through train.sh), pretrain.sh and train_paper.sh: the one place that turns
# the environment into a `deepspeed` launcher command, for one GPU, several, or several nodes.
#   NUM_GPUS=4             GPUs per node (default: the script's; with HOSTFILE: every slot the hostfile lists)
#   HOSTFILE=hostfile      several nodes: one line per node, "node1 slots=8" (deepspeed --hostfile)
#   NUM_NODES=2            use only the first N nodes of the hostfile
#   MASTER_ADDR=node1      address of the first node (default: what `hostname -I` says there)
#   MASTER_PORT=29500      its rendezvous port
#   LAUNCHER=pdsh          how deepspeed starts the other nodes: pdsh (passwordless SSH, the default),
#                          openmpi, mpich, impi, mvapich or slurm
#   NODE_RANK=1            no SSH: start only this node's processes (deepspeed --no_ssh); run the same
#                          command on every node, each with its own NODE_RANK, and MASTER_ADDR set
#   DEEPSPEED_ARGS="..."   anything else for the deepspeed launcher, e.g. "--include node1:0,1"
# See README.md, "Several nodes".

# The project's .venv when there is one (its deepspeed and python, without activating it first).
GEO_SIGN_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ -x "$GEO_SIGN_ROOT/.venv/bin/deepspeed" ]; then
    PATH="$GEO_SIGN_ROOT/.venv/bin:$PATH"
fi

# require_checkpoint PATH: one error line, with where the released checkpoint comes from, when PATH is missing
# (a file or a model folder; CKPT=... names another).
require_checkpoint() {
    if [ ! -e "$1" ]; then
        if [ "$(basename "$1")" = pretraining.pth ]; then
            echo "error: checkpoint not found: $1: Uni-Sign's stage-1 pose pretraining is csl_stage1_weight.pth in" \
                 "the Hub repository ZechengLi19/Uni-Sign: \`hf download ZechengLi19/Uni-Sign csl_stage1_weight.pth" \
                 "--local-dir $(dirname "$1")\`, then rename it to $(basename "$1"), or set CKPT=PATH" >&2
        else
            echo "error: checkpoint not found: $1: put the released $(basename "$1") (Geo-Sign's fine-tuned model," \
                 "from its authors' release) there, or set CKPT=PATH to yours (a .pth or a model folder)" >&2
        fi
        exit 1
    fi
}

# launch SCRIPT DEFAULT_NUM_GPUS [script arguments...]: exec the deepspeed launcher on SCRIPT.
launch() {
    local script=$1 default_gpus=$2
    shift 2
    if ! command -v deepspeed >/dev/null 2>&1; then
        echo "error: deepspeed not found and no .venv in $GEO_SIGN_ROOT: run \`bash script/setup.sh\` (it creates .venv)" >&2
        exit 1
    fi
    local launcher_args=()
    if [ -n "${HOSTFILE:-}" ]; then
        if [ ! -f "$HOSTFILE" ]; then
            echo "error: HOSTFILE=$HOSTFILE does not exist: write one line per node, e.g. 'node1 slots=8'" >&2
            exit 1
        fi
        launcher_args+=(--hostfile "$HOSTFILE")
        [ -n "${NUM_GPUS:-}" ] && launcher_args+=(--num_gpus "$NUM_GPUS")
        [ -n "${NUM_NODES:-}" ] && launcher_args+=(--num_nodes "$NUM_NODES")
        [ -n "${LAUNCHER:-}" ] && launcher_args+=(--launcher "$LAUNCHER")
        [ -n "${NODE_RANK:-}" ] && launcher_args+=(--no_ssh --node_rank "$NODE_RANK")
        [ -n "${MASTER_ADDR:-}" ] && launcher_args+=(--master_addr "$MASTER_ADDR")
    else
        if [ -n "${NUM_NODES:-}${NODE_RANK:-}${LAUNCHER:-}" ]; then
            echo "error: NUM_NODES, NODE_RANK and LAUNCHER need HOSTFILE (one line per node, e.g. 'node1 slots=8')" >&2
            exit 1
        fi
        launcher_args+=(--num_gpus "${NUM_GPUS:-$default_gpus}")
    fi
    [ -n "${MASTER_PORT:-}" ] && launcher_args+=(--master_port "$MASTER_PORT")
    # shellcheck disable=SC2206  # DEEPSPEED_ARGS is split into words on purpose
    launcher_args+=(${DEEPSPEED_ARGS:-})
    exec deepspeed "${launcher_args[@]}" "$script" "$@"
}
