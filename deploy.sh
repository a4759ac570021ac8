#!/usr/bin/env bash
# Build, push and deploy Rose Ash apps to the Docker Swarm stack (README "Deployment").
#
#   ./deploy.sh blog              one app
#   ./deploy.sh blog market       several apps
#   ./deploy.sh --all             all six apps and the whole stack (the first deploy)
#   ./deploy.sh                   the apps changed since the last deployed commit
#   ./deploy.sh --dry-run ...     print every command instead of running it
#
# Which apps changed is decided by deploy/changed_apps.py (the same program CI uses). The
# last deployed commit is recorded in this repository as the ref refs/deploy/<stack>
# (`git show refs/deploy/coop`; share it with `git push origin refs/deploy/coop`).
set -euo pipefail

readonly APPS=(blog market cart events federation account)

usage() {
    cat <<EOF
Usage: ./deploy.sh [--dry-run] [--all | --since REV | APP...]

Build the apps' images from this checkout, push them to \$REGISTRY and update the Swarm
stack \$STACK_NAME. Settings are read from ./.env when it exists (see .env.example).

  APP...        deploy these apps: ${APPS[*]}
  --all         deploy all six apps with \`docker stack deploy\` (use it for the first deploy
                and after changing docker-compose.yml)
  (no APP)      deploy the apps changed since the last deployed commit (refs/deploy/<stack>);
                all six when there is none; shared/ or docker-compose.yml changed: all six
  --since REV   compare with REV instead of the last deployed commit
  --dry-run     print every command instead of running it
  -h, --help    show this help

Environment: REGISTRY (registry.rose-ash.com:5000), STACK_NAME (coop), SWARM_HOST (the
docker host of a swarm manager, e.g. ssh://deploy@swarm.example.coop; default: this one).
EOF
}

die() {
    echo "deploy.sh: $*" >&2
    exit 1
}

usage_error() {
    usage >&2
    echo "deploy.sh: $*" >&2
    exit 2
}

cd "$(dirname "$0")"

if [[ -f .env ]]; then
    set -a
    # shellcheck source=/dev/null
    . ./.env
    set +a
fi

REGISTRY="${REGISTRY:-registry.rose-ash.com:5000}"
STACK_NAME="${STACK_NAME:-coop}"
SWARM_HOST="${SWARM_HOST:-}"

dry_run=false
all=false
since=""
since_given=false
requested=()
while (($# > 0)); do
    case "$1" in
        --dry-run) dry_run=true ;;
        --all) all=true ;;
        --since)
            (($# >= 2)) || usage_error "--since needs a revision"
            since="$2"
            since_given=true
            shift
            ;;
        --since=*)
            since="${1#--since=}"
            since_given=true
            ;;
        -h | --help)
            usage
            exit 0
            ;;
        -*)
            usage_error "unknown option: $1"
            ;;
        *)
            known=false
            for app in "${APPS[@]}"; do
                [[ "$1" == "$app" ]] && known=true
            done
            [[ "$known" == true ]] || usage_error "unknown app: $1 (the apps are: ${APPS[*]})"
            requested+=("$1")
            ;;
    esac
    shift
done

if [[ "$all" == true && ${#requested[@]} -gt 0 ]]; then
    usage_error "give either --all or app names, not both"
fi

# Print a command (dry run) or run it. Printed commands can be pasted into a shell.
run() {
    if [[ "$dry_run" == true ]]; then
        local quoted
        quoted="$(printf '%q ' "$@")"
        echo "+ ${quoted% }"
    else
        "$@"
    fi
}

swarm_docker=(docker)
if [[ -n "$SWARM_HOST" ]]; then
    swarm_docker=(docker --host "$SWARM_HOST")
fi

git rev-parse --git-dir >/dev/null 2>&1 || die "not a git checkout: $(pwd)"
head_commit="$(git rev-parse HEAD)"
tag="$(git rev-parse --short=12 HEAD)"
deploy_ref="refs/deploy/$STACK_NAME"

if [[ -n "$(git status --porcelain --untracked-files=no)" ]]; then
    if [[ "$dry_run" == true ]]; then
        echo "deploy.sh: warning: uncommitted changes; images are tagged $tag all the same" >&2
    else
        die "uncommitted changes: commit them first (images are tagged with the commit)"
    fi
fi
if [[ "$dry_run" != true ]]; then
    command -v docker >/dev/null || die "the docker client is not installed"
fi

# Which apps.
apps=()
if [[ "$all" == true ]]; then
    apps=("${APPS[@]}")
    echo "deploy.sh: --all: ${apps[*]}"
elif ((${#requested[@]} > 0)); then
    for app in "${APPS[@]}"; do # canonical order, each once: blog (which migrates) first
        for wanted in "${requested[@]}"; do
            if [[ "$wanted" == "$app" ]]; then
                apps+=("$app")
                break
            fi
        done
    done
    echo "deploy.sh: requested: ${apps[*]}"
else
    if [[ "$since_given" != true ]]; then
        since="$(git rev-parse --quiet --verify "$deploy_ref^{commit}" || true)"
    fi
    detected="$(python3 deploy/changed_apps.py --base "$since" --head HEAD --format words)"
    read -r -a apps <<<"$detected" || true
    if [[ -z "$since" ]]; then
        echo "deploy.sh: no deployed commit recorded ($deploy_ref): first deploy, all apps"
    else
        echo "deploy.sh: changed since ${since:0:12}: ${apps[*]:-(none)}"
    fi
fi

if ((${#apps[@]} == 0)); then
    echo "deploy.sh: nothing to deploy"
    run git update-ref -m "deploy.sh: nothing to deploy" "$deploy_ref" "$head_commit"
    exit 0
fi

image_of() {
    echo "$REGISTRY/rose-ash-$1"
}

# Build and push: the commit's tag, and :latest (CI looks for :latest to find missing images).
for app in "${apps[@]}"; do
    image="$(image_of "$app")"
    run docker build --pull -f "$app/Dockerfile" -t "$image:$tag" -t "$image:latest" .
    run docker push "$image:$tag"
    run docker push "$image:latest"
done

# Update the services. Each update follows the stack's update_config: one task at a time,
# the new one started and healthy before the old one stops, rolled back on failure.
service_exists() {
    "${swarm_docker[@]}" service inspect "$1" >/dev/null 2>&1
}

update_service() {
    local app="$1"
    local service="${STACK_NAME}_$app"
    run "${swarm_docker[@]}" service update --with-registry-auth --detach=false \
        --image "$(image_of "$app"):$tag" "$service"
    if [[ "$app" == federation ]]; then # the worker runs the federation image
        run "${swarm_docker[@]}" service update --with-registry-auth --detach=false \
            --image "$(image_of federation):$tag" "${STACK_NAME}_worker"
    fi
}

if ((${#apps[@]} == ${#APPS[@]})); then
    # The whole stack, so that changes to docker-compose.yml and the edge configs apply too.
    # Blog migrates the database: when it already runs, update it first and wait, so the
    # other apps start on the new schema.
    if [[ "$dry_run" == true ]]; then
        echo "# when ${STACK_NAME}_blog already runs, it is updated (and migrates) first:"
        update_service blog
    elif service_exists "${STACK_NAME}_blog"; then
        update_service blog
    fi
    caddyfile_digest="$(sha256sum deploy/Caddyfile | cut -c1-12)"
    pg_backup_digest="$(sha256sum deploy/pg-backup.sh | cut -c1-12)"
    run env \
        REGISTRY="$REGISTRY" STACK_NAME="$STACK_NAME" \
        BLOG_TAG="$tag" MARKET_TAG="$tag" CART_TAG="$tag" EVENTS_TAG="$tag" \
        FEDERATION_TAG="$tag" ACCOUNT_TAG="$tag" \
        CADDYFILE_DIGEST="$caddyfile_digest" PG_BACKUP_DIGEST="$pg_backup_digest" \
        "${swarm_docker[@]}" stack deploy --with-registry-auth --detach=false \
        -c docker-compose.yml "$STACK_NAME"
else
    for app in "${apps[@]}"; do
        if [[ "$dry_run" != true ]] && ! service_exists "${STACK_NAME}_$app"; then
            die "service ${STACK_NAME}_$app does not exist: run ./deploy.sh --all first"
        fi
        update_service "$app"
    done
fi

run git update-ref -m "deploy.sh: ${apps[*]}" "$deploy_ref" "$head_commit"
echo "deploy.sh: deployed ${apps[*]} at $tag"
