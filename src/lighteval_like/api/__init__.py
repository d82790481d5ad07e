"""The ground floor: types every stage shares (requests, responses, prompts, docs, generation
parameters, errors, typed configs). Nothing here imports anything else of the package."""
